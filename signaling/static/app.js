// Demo meeting page: WebSocket signaling (protocol v1, docs/PROTOCOL.md) and one
// RTCPeerConnection that publishes camera and microphone and receives everyone else.
//
// The client always makes the offer and the server only answers, so there is no
// glare; offers are serialized, and anything that changes while one is in flight
// is folded into one more round after it.
//
// The server may send warnings (error messages with request "offer") before an
// answer, or refuse the offer with an error and no answer. Replies come in order,
// so a ping sent right after the offer tells the two apart: if its pong arrives
// and no answer came first, the offer was refused.

import { DataChannels } from "./channels.js";

const PROTOCOL_VERSION = 1;
const ANSWER_TIMEOUT_MS = 15000;
const PING_INTERVAL_MS = 20000;
const LEAVE_CLOSE_TIMEOUT_MS = 3000;
const FRAME_POLL_MS = 100;
// Events often come in bursts (a publisher's audio and video tracks): wait this
// long before an offer so that one round covers the whole burst.
const NEGOTIATION_DELAY_MS = 10;

// Receive-side video codecs kept in our offers. Chromium lists many codec
// variants plus RED/ULPFEC; each costs SDP lines in every receiving m-section, and
// the server refuses messages over 256 KiB, so big rooms need a lean offer.
const RECV_VIDEO_CODECS = new Set(["video/vp8", "video/vp9", "video/h264", "video/av1"]);

const $ = (id) => document.getElementById(id);

const ui = {
  status: $("status"),
  roomName: $("room-name"),
  tiles: $("tiles"),
  form: $("token-form"),
  tokenInput: $("token-input"),
  mic: $("mic"),
  cam: $("cam"),
  leave: $("leave"),
  chatLog: $("chat-log"),
  chatForm: $("chat-form"),
  chatInput: $("chat-input"),
  fileInput: $("file-input"),
};

function setStatus(text, kind = "info") {
  ui.status.textContent = text;
  ui.status.dataset.kind = kind;
}

/** An error the server sent as {"type":"error"}. */
class ServerError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

/** Words for a person, from an error code and the server's text. */
function describeError(code, message) {
  const detail = message ? `: ${message}` : "";
  switch (code) {
    case "unauthorized":
      return /expir/i.test(message ?? "")
        ? "token expired — ask for a new link"
        : `token rejected — ask for a new link${detail}`;
    case "forbidden":
      return `denied${detail}`;
    case "unsupported_version":
      return "this page is out of date for the server — reload it";
    case "bad_sdp":
      return `media negotiation failed${detail}`;
    case "codec_mismatch":
    case "unsupported":
      return `some media cannot be exchanged${detail}`;
    case "session_closed":
      return `session ended${detail}`;
    case "join_timeout":
      return "joining took too long — reload to try again";
    case "internal":
      return `server error${detail}`;
    case "too_large":
    case "bad_json":
    case "bad_message":
    case "unknown_type":
    case "not_joined":
    case "already_joined":
      return `protocol error (${code})${detail}`;
    default:
      return `error ${code}${detail}`;
  }
}

const CLOSE_ERRORS = {
  4401: { code: "unauthorized", text: "token rejected — ask for a new link" },
  4403: { code: "forbidden", text: "denied: this token is not for this room" },
  4408: { code: "join_timeout", text: "joining took too long — reload to try again" },
  4410: { code: "session_closed", text: "the server ended this session — reload to rejoin" },
};

/** Read `#token=...&room=...` (the fragment never reaches the server's logs). */
function readFragment() {
  const params = new URLSearchParams(location.hash.replace(/^#/, ""));
  return { token: params.get("token"), room: params.get("room") };
}

function createTile(caption, isLocal) {
  const tile = document.createElement("figure");
  tile.className = isLocal ? "tile local" : "tile";
  const media = document.createElement("div");
  media.className = "media";
  const label = document.createElement("figcaption");
  label.textContent = caption;
  tile.append(media, label);
  return { tile, media, label };
}

class Meeting {
  constructor(token, room) {
    this.token = token;
    this.room = room;
    this.state = "connecting";
    this.identity = null;
    this.lastError = null;
    this.joinedAt = null;
    this.firstFrameAt = {};

    this.ws = null;
    this.opened = false;
    this.leaving = false;
    this.pc = null;
    this.localStream = null;
    this.localTile = null;
    this.publications = []; // {transceiver, label, track}
    this.published = []; // Track objects the server confirmed in its last answer
    this.participants = new Map(); // identity -> {name, tile, media, label}
    this.subscriptions = new Map(); // track_id -> {track, transceiver, element}
    this.trackIdByTransceiver = new WeakMap();

    this.ready = false; // set once publishing is set up: no offer before that
    this.negotiating = false;
    this.negotiationWanted = false;
    this.pendingAnswer = null;
    this.pingsSent = 0;
    this.pongsReceived = 0;
    this.timers = [];
    this.pollingFrames = false;
  }

  start() {
    setStatus("connecting…");
    let ws;
    try {
      ws = new WebSocket(`wss://${location.host}/ws`);
    } catch (err) {
      this.fail("unreachable", `server unreachable (${err.message})`);
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      this.opened = true;
      const join = { type: "join", version: PROTOCOL_VERSION, token: this.token };
      if (this.room) join.room = this.room;
      this.send(join);
      this.timers.push(setInterval(() => this.ping(), PING_INTERVAL_MS));
    };
    ws.onmessage = (event) => this.onMessage(event.data);
    ws.onclose = (event) => this.onClose(event);
  }

  /** Send a ping; returns its sequence number (the server answers pings in order). */
  ping() {
    this.send({ type: "ping" });
    this.pingsSent += 1;
    return this.pingsSent;
  }

  send(message) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(message));
    }
  }

  onMessage(data) {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      console.warn("ignoring a frame that is not JSON");
      return;
    }
    switch (msg.type) {
      case "joined":
        this.onJoined(msg).catch((err) => this.fail("internal", `could not start: ${err.message}`));
        break;
      case "answer":
        if (this.pendingAnswer) this.pendingAnswer.resolve(msg);
        break;
      case "participant_joined":
        this.addParticipant(msg.participant);
        break;
      case "participant_left":
        this.removeParticipant(msg.identity);
        break;
      case "track_published":
        this.addSubscription(msg.track);
        break;
      case "track_unpublished":
        this.removeSubscription(msg.track_id);
        break;
      case "error":
        this.onServerError(msg);
        break;
      case "pong":
        this.pongsReceived += 1;
        if (this.pendingAnswer && this.pongsReceived >= this.pendingAnswer.barrier) {
          this.pendingAnswer.reject(this.pendingAnswer.refusal ?? new Error("the server refused the offer"));
        }
        break;
      default:
        // Newer servers may send events this page does not know: skip them.
        console.info(`ignoring message type ${msg.type}`);
    }
  }

  async onJoined(msg) {
    this.identity = msg.identity;
    this.joinedAt = performance.now();
    this.state = "joined";
    ui.roomName.textContent = msg.room;
    setStatus(`joined as ${msg.name || msg.identity}${msg.role === "viewer" ? " (viewer)" : ""}`, "ok");
    ui.leave.disabled = false;

    this.pc = this.createPeerConnection();
    // Chat and files: their own channels on their own transport (docs/DATA_CHANNELS.md).
    this.channels = new DataChannels(this.pc, { log: ui.chatLog }, (id) => this.participants.get(id)?.name);
    this.channels.opened.then(() => {
      ui.chatInput.disabled = false;
      ui.fileInput.disabled = false;
    });
    for (const participant of msg.participants ?? []) {
      this.addParticipant(participant);
      for (const track of participant.tracks ?? []) this.addSubscription(track);
    }
    // Camera and microphone only when the token may publish them (a chat-only
    // participant never opens its devices).
    const grants = new Set(msg.grants ?? []);
    if (msg.can_publish && (grants.has("publish:audio") || grants.has("publish:video"))) {
      try {
        await this.startPublishing(msg.name || msg.identity);
      } catch (err) {
        setStatus(`camera/microphone unavailable (${err.name}): receiving only`, "error");
      }
    }
    this.timers.push(setInterval(() => this.pollFirstFrames(), FRAME_POLL_MS));
    this.ready = true;
    this.requestNegotiation();
  }

  createPeerConnection() {
    // "balanced" + an answer without BUNDLE = one ICE+DTLS transport per m-section,
    // so audio and video never share a transport.
    const pc = new RTCPeerConnection({ bundlePolicy: "balanced", rtcpMuxPolicy: "require", iceServers: [] });
    pc.ontrack = (event) => this.onTrack(event);
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === "failed" && this.state === "joined") {
        setStatus("media connection failed — check the network and reload", "error");
      }
    };
    return pc;
  }

  async startPublishing(name) {
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: true,
      video: { width: 640, height: 480 },
    });
    if (this.state !== "joined") {
      for (const track of stream.getTracks()) track.stop();
      return;
    }
    this.localStream = stream;
    const sources = [
      ...stream.getAudioTracks().map((track) => ({ track, label: "microphone" })),
      ...stream.getVideoTracks().map((track) => ({ track, label: "camera" })),
    ];
    for (const { track, label } of sources) {
      const transceiver = this.pc.addTransceiver(track, { direction: "sendonly", streams: [stream] });
      this.publications.push({ transceiver, label, track });
    }

    this.localTile = createTile(`${name} (you)`, true);
    const video = document.createElement("video");
    video.autoplay = true;
    video.playsInline = true;
    video.muted = true;
    video.srcObject = stream;
    this.localTile.media.append(video);
    ui.tiles.prepend(this.localTile.tile);

    ui.mic.disabled = stream.getAudioTracks().length === 0;
    ui.cam.disabled = stream.getVideoTracks().length === 0;
  }

  addParticipant(participant) {
    if (!participant || participant.identity === this.identity) return;
    const name = participant.name || participant.identity;
    const existing = this.participants.get(participant.identity);
    if (existing) {
      existing.label.textContent = name;
      return;
    }
    const tile = createTile(name, false);
    tile.tile.dataset.identity = participant.identity;
    ui.tiles.append(tile.tile);
    this.participants.set(participant.identity, { name, ...tile });
  }

  removeParticipant(identity) {
    let stopped = false;
    for (const [trackId, sub] of this.subscriptions) {
      if (sub.track.identity === identity) stopped = this.dropSubscription(trackId) || stopped;
    }
    const participant = this.participants.get(identity);
    if (participant) {
      participant.tile.remove();
      this.participants.delete(identity);
    }
    if (stopped) this.requestNegotiation();
  }

  addSubscription(track) {
    if (!track || track.identity === this.identity || this.subscriptions.has(track.track_id)) return;
    if (!this.participants.has(track.identity)) {
      this.addParticipant({ identity: track.identity, name: track.identity });
    }
    this.subscriptions.set(track.track_id, { track, transceiver: null, element: null });
    this.requestNegotiation();
  }

  removeSubscription(trackId) {
    if (this.dropSubscription(trackId)) this.requestNegotiation();
  }

  /** Forget a subscription; true if its transceiver was stopped (offer needed). */
  dropSubscription(trackId) {
    const sub = this.subscriptions.get(trackId);
    if (!sub) return false;
    this.subscriptions.delete(trackId);
    sub.element?.remove();
    if (sub.transceiver && sub.transceiver.direction !== "stopped") {
      sub.transceiver.stop();
      return true;
    }
    return false;
  }

  onTrack(event) {
    const trackId = this.trackIdByTransceiver.get(event.transceiver);
    const sub = trackId === undefined ? undefined : this.subscriptions.get(trackId);
    if (!sub) return;
    const participant = this.participants.get(sub.track.identity);
    if (!participant) return;

    sub.element?.remove();
    const stream = new MediaStream([event.track]);
    let element;
    if (event.track.kind === "video") {
      element = document.createElement("video");
      element.playsInline = true;
      element.muted = true;
      if ("requestVideoFrameCallback" in element) {
        element.requestVideoFrameCallback(() => this.markFirstFrame(sub.track.identity));
      }
    } else {
      element = document.createElement("audio");
    }
    element.autoplay = true;
    element.srcObject = stream;
    element.dataset.trackId = trackId;
    participant.media.append(element);
    sub.element = element;
  }

  requestNegotiation() {
    this.negotiationWanted = true;
    if (this.ready && !this.negotiating) this.runNegotiation();
  }

  async runNegotiation() {
    this.negotiating = true;
    try {
      await new Promise((resolve) => setTimeout(resolve, NEGOTIATION_DELAY_MS));
      while (this.negotiationWanted && this.state === "joined") {
        this.negotiationWanted = false;
        try {
          await this.negotiateOnce();
        } catch (err) {
          // Leave negotiationWanted as it is: the next server event tries again,
          // rather than looping on an offer the server keeps refusing.
          if (this.state !== "joined") break;
          if (!(err instanceof ServerError)) setStatus(`media negotiation failed: ${err.message}`, "error");
          break;
        }
      }
    } finally {
      this.negotiating = false;
    }
  }

  async negotiateOnce() {
    const pc = this.pc;
    for (const [trackId, sub] of this.subscriptions) {
      if (sub.transceiver) continue;
      sub.transceiver = pc.addTransceiver(sub.track.kind, { direction: "recvonly" });
      this.trackIdByTransceiver.set(sub.transceiver, trackId);
      if (sub.track.kind === "video") preferLeanVideoCodecs(sub.transceiver);
    }
    if (pc.getTransceivers().length === 0 && !this.channels) return;

    await pc.setLocalDescription(await pc.createOffer());
    const mids = {};
    for (const pub of this.publications) {
      if (pub.transceiver.mid !== null && pub.transceiver.direction !== "stopped") {
        mids[pub.transceiver.mid] = { publish: pub.label };
      }
    }
    for (const [trackId, sub] of this.subscriptions) {
      const mid = sub.transceiver?.mid;
      if (mid !== null && mid !== undefined && sub.transceiver.direction !== "stopped") {
        mids[mid] = { subscribe: trackId };
      }
    }

    const answered = this.expectAnswer();
    this.send({ type: "offer", sdp: pc.localDescription.sdp, mids });
    this.pendingAnswer.barrier = this.ping();
    let answer;
    try {
      answer = await answered;
    } catch (err) {
      if (pc.signalingState === "have-local-offer") await pc.setLocalDescription({ type: "rollback" });
      throw err;
    }
    await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
    this.published = answer.published ?? [];
  }

  expectAnswer() {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => settle(reject, new Error("the server did not answer")), ANSWER_TIMEOUT_MS);
      const settle = (fn, value) => {
        clearTimeout(timer);
        this.pendingAnswer = null;
        fn(value);
      };
      this.pendingAnswer = {
        barrier: Infinity, // sequence number of the ping sent after the offer
        refusal: null, // the last error the server sent about this offer
        resolve: (msg) => settle(resolve, msg),
        reject: (err) => settle(reject, err),
      };
    });
  }

  onServerError(msg) {
    this.lastError = { code: msg.code, message: msg.message ?? "" };
    if (msg.request === "offer" && this.pendingAnswer) {
      this.pendingAnswer.refusal = new ServerError(msg.code, msg.message);
    }
    if (msg.code === "unknown_track") {
      // Expected race: the track went away while our offer was in flight.
      console.info(`server: ${msg.message}`);
    } else {
      setStatus(describeError(msg.code, msg.message), "error");
    }
    // An error before "joined" means the join itself failed.
    if (this.state === "connecting") this.state = "error";
  }

  onClose(event) {
    const known = CLOSE_ERRORS[event.code];
    if (this.leaving) {
      this.state = "closed";
    } else if (known) {
      // The error message that preceded the close has the precise words; keep them.
      if (this.lastError?.code !== known.code) {
        this.lastError = { code: known.code, message: event.reason || known.text };
        setStatus(known.text, "error");
      }
      this.state = "error";
    } else if (!this.opened) {
      this.lastError = { code: "unreachable", message: "server unreachable" };
      setStatus("server unreachable — check the address and try again", "error");
      this.state = "error";
    } else if (event.code === 1000 || event.code === 1001) {
      setStatus("the server ended the meeting for you", "info");
      this.state = "closed";
    } else {
      this.lastError = { code: "connection_lost", message: `connection lost (${event.code})` };
      setStatus("connection to the server lost — reload to rejoin", "error");
      this.state = "error";
    }
    this.teardown();
  }

  fail(code, text) {
    this.lastError = { code, message: text };
    setStatus(text, "error");
    this.state = "error";
    this.teardown();
    this.ws?.close();
  }

  leave() {
    if (this.state === "closed" || this.state === "error") return;
    this.leaving = true;
    this.state = "closed";
    this.send({ type: "leave" });
    setStatus("you left the meeting", "info");
    this.teardown();
    // The server closes the socket after "leave"; close it ourselves if it doesn't.
    const ws = this.ws;
    setTimeout(() => {
      if (ws && ws.readyState !== WebSocket.CLOSED) ws.close(1000);
    }, LEAVE_CLOSE_TIMEOUT_MS);
  }

  teardown() {
    for (const timer of this.timers) clearInterval(timer);
    this.timers = [];
    this.pendingAnswer?.reject(new Error("connection closed"));
    this.pc?.close();
    for (const track of this.localStream?.getTracks() ?? []) track.stop();
    for (const identity of [...this.participants.keys()]) {
      this.participants.get(identity).tile.remove();
      this.participants.delete(identity);
    }
    this.subscriptions.clear();
    this.localTile?.tile.remove();
    ui.mic.disabled = true;
    ui.cam.disabled = true;
    ui.leave.disabled = true;
    ui.chatInput.disabled = true;
    ui.fileInput.disabled = true;
  }

  toggle(kind, button, onText, offText) {
    const tracks = kind === "audio" ? this.localStream?.getAudioTracks() : this.localStream?.getVideoTracks();
    if (!tracks?.length) return;
    const enabled = !tracks[0].enabled;
    for (const track of tracks) track.enabled = enabled;
    button.textContent = enabled ? onText : offText;
    button.setAttribute("aria-pressed", String(!enabled));
    this.localTile?.tile.classList.toggle(kind === "audio" ? "mic-off" : "cam-off", !enabled);
  }

  markFirstFrame(identity) {
    if (!(identity in this.firstFrameAt)) this.firstFrameAt[identity] = performance.now();
  }

  async pollFirstFrames() {
    if (this.pollingFrames || !this.pc) return;
    const waiting = [...this.subscriptions.values()].some(
      (sub) => sub.track.kind === "video" && !(sub.track.identity in this.firstFrameAt),
    );
    if (!waiting) return;
    this.pollingFrames = true;
    try {
      const stats = await this.mediaStats();
      for (const [identity, kinds] of Object.entries(stats)) {
        if (kinds.video && kinds.video.framesDecoded > 0) this.markFirstFrame(identity);
      }
    } finally {
      this.pollingFrames = false;
    }
  }

  /** Inbound media per publisher identity, mapped through mid -> track_id -> identity. */
  async mediaStats() {
    const result = {};
    if (!this.pc || this.pc.signalingState === "closed") return result;
    const byMid = new Map();
    const byTrackIdentifier = new Map();
    for (const sub of this.subscriptions.values()) {
      const transceiver = sub.transceiver;
      if (!transceiver) continue;
      if (transceiver.mid !== null) byMid.set(transceiver.mid, sub.track);
      byTrackIdentifier.set(transceiver.receiver.track.id, sub.track);
    }
    const report = await this.pc.getStats();
    report.forEach((s) => {
      if (s.type !== "inbound-rtp") return;
      const track = (s.mid !== undefined && byMid.get(s.mid)) || byTrackIdentifier.get(s.trackIdentifier);
      if (!track) return;
      const entry = (result[track.identity] ??= {});
      if (s.kind === "video") {
        const video = {
          framesDecoded: s.framesDecoded ?? 0,
          frameWidth: s.frameWidth ?? 0,
          frameHeight: s.frameHeight ?? 0,
          packetsReceived: s.packetsReceived ?? 0,
        };
        // A publisher with several video tracks: report the busiest one.
        if (!entry.video || video.framesDecoded > entry.video.framesDecoded) entry.video = video;
      } else if (s.kind === "audio") {
        const audio = {
          packetsReceived: s.packetsReceived ?? 0,
          totalSamplesReceived: s.totalSamplesReceived ?? 0,
        };
        if (!entry.audio || audio.packetsReceived > entry.audio.packetsReceived) entry.audio = audio;
      }
    });
    return result;
  }

  /** One entry per ICE+DTLS transport (one per m-section when the answer has no BUNDLE). */
  async transportStats() {
    if (!this.pc || this.pc.signalingState === "closed") return [];
    const report = await this.pc.getStats();
    const transports = [];
    report.forEach((s) => {
      if (s.type !== "transport") return;
      const pair = s.selectedCandidatePairId ? report.get(s.selectedCandidatePairId) : undefined;
      transports.push({
        dtlsCipher: s.dtlsCipher ?? null,
        srtpCipher: s.srtpCipher ?? null,
        tlsVersion: s.tlsVersion ?? null,
        dtlsState: s.dtlsState ?? null,
        selectedCandidatePairRtt: pair?.currentRoundTripTime ?? null,
      });
    });
    return transports;
  }

  participantIdentities() {
    return [...this.participants.keys()];
  }
}

/** Keep the common video codecs in a receiving offer, dropping FEC and variants we never get. */
function preferLeanVideoCodecs(transceiver) {
  if (typeof transceiver.setCodecPreferences !== "function") return;
  const capabilities = RTCRtpReceiver.getCapabilities?.("video");
  if (!capabilities) return;
  const seen = new Set();
  const codecs = capabilities.codecs.filter((codec) => {
    const mime = codec.mimeType.toLowerCase();
    if (mime === "video/rtx") return true;
    if (!RECV_VIDEO_CODECS.has(mime) || seen.has(mime)) return false;
    if (mime === "video/h264" && !(codec.sdpFmtpLine ?? "").includes("packetization-mode=1")) return false;
    // One entry per codec: the first listed is Chromium's preferred profile.
    seen.add(mime);
    return true;
  });
  try {
    if (codecs.length) transceiver.setCodecPreferences(codecs);
  } catch (err) {
    console.warn(`keeping default codecs: ${err.message}`);
  }
}

let meeting = null;

function join(token, room) {
  ui.form.hidden = true;
  meeting = new Meeting(token, room);
  meeting.start();
}

/** What the browser tests read: see tests/e2e. */
window.sfu = {
  get state() {
    return meeting ? meeting.state : "closed";
  },
  get identity() {
    return meeting?.identity ?? null;
  },
  get lastError() {
    return meeting?.lastError ?? null;
  },
  get joinedAt() {
    return meeting?.joinedAt ?? null;
  },
  get firstFrameAt() {
    return { ...(meeting?.firstFrameAt ?? {}) };
  },
  participants: () => (meeting ? meeting.participantIdentities() : []),
  mediaStats: async () => (meeting ? meeting.mediaStats() : {}),
  transportStats: async () => (meeting ? meeting.transportStats() : []),
  leave: () => meeting?.leave(),
  chatReady: () => Boolean(meeting?.channels?.ready),
  sendChat: (body, to) => meeting?.channels?.sendChat(body, to) ?? false,
  chat: () => [...(meeting?.channels?.chat ?? [])],
  /** The wall clock in ms with sub-ms resolution, comparable between pages. */
  now: () => performance.timeOrigin + performance.now(),
  filesReceived: () => (meeting?.channels?.files() ?? []).reduce((sum, f) => sum + f.received, 0),
  dataErrors: () => [...(meeting?.channels?.errors ?? [])],
  files: () => meeting?.channels?.files() ?? [],
  /** Send `size` random bytes as a file; resolves when every recipient verified it. */
  sendRandomFile: async (name, size, type = "application/octet-stream", to = undefined) => {
    const bytes = new Uint8Array(size);
    for (let i = 0; i < size; i += 65536) crypto.getRandomValues(bytes.subarray(i, Math.min(i + 65536, size)));
    const entry = await meeting.channels.sendFile(new File([bytes], name, { type }), to);
    const done = await entry.done;
    return { verifiedBy: done.verifiedBy, transfer: done.transfer };
  },
};

ui.mic.addEventListener("click", () => meeting?.toggle("audio", ui.mic, "Mute mic", "Unmute mic"));
ui.cam.addEventListener("click", () => meeting?.toggle("video", ui.cam, "Camera off", "Camera on"));
ui.leave.addEventListener("click", () => meeting?.leave());
ui.chatForm.addEventListener("submit", (event) => {
  event.preventDefault();
  if (meeting?.channels?.sendChat(ui.chatInput.value.trim())) ui.chatInput.value = "";
});
ui.fileInput.addEventListener("change", () => {
  for (const file of ui.fileInput.files ?? []) {
    meeting?.channels?.sendFile(file).then((entry) => entry.done).catch((err) => setStatus(`file not sent: ${err.message}`, "error"));
  }
  ui.fileInput.value = "";
});
window.addEventListener("pagehide", () => meeting?.leave());

ui.form.addEventListener("submit", (event) => {
  event.preventDefault();
  const pasted = ui.tokenInput.value.trim();
  // Accept a bare token or a whole meeting link with #token=...
  const hash = pasted.includes("#") ? pasted.slice(pasted.indexOf("#") + 1) : `token=${pasted}`;
  const params = new URLSearchParams(hash);
  const token = params.get("token");
  if (!token) {
    setStatus("that does not look like a token or a meeting link", "error");
    return;
  }
  history.replaceState(null, "", `#${params.toString()}`);
  join(token, params.get("room"));
});

const fragment = readFragment();
if (fragment.token) {
  join(fragment.token, fragment.room);
} else {
  ui.form.hidden = false;
  setStatus("paste an access token to join");
}
