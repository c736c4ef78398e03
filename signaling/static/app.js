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
import { ConnectionPanel } from "./connection.js";
import {
  IdentityKeyPair,
  PUBLIC_KEY_BYTES,
  fromBase64Url,
  helloMessage,
  keyMessage,
  safetyNumber,
  unwrapSenderKey,
  wrapSenderKey,
  x25519Supported,
} from "./e2ee.js";

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

// End-to-end encryption (docs/E2EE.md; the on/off and key distribution design is
// described at the top of e2ee-worker.js). Frames are encrypted only as VP8 or Opus,
// so published video is always VP8: E2EE can then be turned on at any time without
// renegotiating a codec.
const SEND_VIDEO_CODEC = "video/vp8";
// "E2EE off" notice: an e2ee_hello with 32 zero bytes, a low-order point that is never
// a real identity key (the server relays no other fields of a hello).
const E2EE_OFF_PUBLIC_KEY = "A".repeat(43);
// After a member turns E2EE off, its keys stay this long for frames still in flight.
const E2EE_OFF_GRACE_MS = 3000;
const SCRIPT_TRANSFORM = typeof RTCRtpScriptTransform === "function";
const ENCODED_STREAMS =
  !SCRIPT_TRANSFORM && typeof RTCRtpSender !== "undefined" && "createEncodedStreams" in RTCRtpSender.prototype;

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
  lock: $("lock"),
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

/**
 * This page's end-to-end encryption: identity key, e2ee_hello / e2ee_key handling and
 * the one Worker that transforms every frame (e2ee-worker.js).
 */
class EndToEnd {
  constructor(meeting) {
    this.meeting = meeting;
    this.enabled = false;
    this.identityKey = null; // IdentityKeyPair, made when first turned on
    this.worker = null;
    this.members = new Map(); // identity -> member record (see member())
    this.verified = new Map(); // "identity publicKey" -> true, for this session
    this.frames = {}; // identity -> {decrypted, dropped, passed, kid}, from the Worker
    this.sent = { encrypted: 0, dropped: 0, plain: 0 };
    this.transformed = new WeakSet(); // senders and receivers already given a transform
    this.requests = new Map();
    this.nextRequest = 1;
    this.queue = Promise.resolve();
    this.supported = SCRIPT_TRANSFORM || ENCODED_STREAMS;
  }

  /** Run `task` after every earlier one: a hello is handled before the key that follows it. */
  run(task) {
    const result = this.queue.then(task);
    this.queue = result.catch((err) => console.warn(`e2ee: ${err.message}`));
    return result;
  }

  member(identity) {
    let member = this.members.get(identity);
    if (!member) {
      member = {
        publicKey: null, // Uint8Array(32), the first one announced
        publicKeyText: null,
        encrypting: false, // announced E2EE and has not turned it off
        conflict: false, // announced a second, different key: trusted no more
        answered: false, // we sent it our hello since it last turned on
        sentKids: new Set(), // our KIDs it has been sent
        kids: new Set(), // its KIDs we hold
        safetyNumber: null,
        offTimer: null,
      };
      this.members.set(identity, member);
    }
    return member;
  }

  ensureWorker() {
    if (this.worker || !this.supported) return;
    this.worker = new Worker("/static/e2ee-worker.js", { type: "module" });
    this.worker.onmessage = (event) => this.onWorkerMessage(event.data);
    this.worker.onerror = (event) => console.warn(`e2ee worker failed: ${event.message}`);
    for (const pub of this.meeting.publications) this.attachSender(pub.transceiver, pub.track.kind);
    for (const sub of this.meeting.subscriptions.values()) {
      if (sub.transceiver) this.attachReceiver(sub.transceiver, sub.track);
    }
  }

  call(message) {
    const id = this.nextRequest++;
    return new Promise((resolve) => {
      this.requests.set(id, resolve);
      this.worker.postMessage({ ...message, id });
    });
  }

  onWorkerMessage(msg) {
    switch (msg.op) {
      case "reply":
        this.requests.get(msg.id)?.(msg);
        this.requests.delete(msg.id);
        break;
      case "newKey":
        this.run(() => this.distribute(msg));
        break;
      case "stats":
        this.frames = msg.frames;
        this.sent = msg.sent;
        this.sendKid = msg.sendKid ?? null;
        break;
      default:
        break;
    }
  }

  attach(endpoint, options) {
    if (!this.worker || this.transformed.has(endpoint)) return;
    this.transformed.add(endpoint);
    if (SCRIPT_TRANSFORM) {
      endpoint.transform = new RTCRtpScriptTransform(this.worker, options);
    } else {
      const { readable, writable } = endpoint.createEncodedStreams();
      this.worker.postMessage({ op: "stream", readable, writable, options }, [readable, writable]);
    }
  }

  attachSender(transceiver, kind) {
    if (transceiver.direction === "stopped") return;
    this.attach(transceiver.sender, { side: "send", kind });
  }

  attachReceiver(transceiver, track) {
    if (transceiver.direction === "stopped") return;
    this.attach(transceiver.receiver, { side: "receive", kind: track.kind, identity: track.identity });
  }

  /** Turn E2EE on or off for this page; resolves once the room has been told. */
  setEnabled(on) {
    return this.run(async () => {
      if (on === this.enabled || this.meeting.state !== "joined") return;
      if (on) {
        if (!this.supported || !(await x25519Supported())) throw new Error("this browser cannot encrypt media");
        this.identityKey ??= await IdentityKeyPair.generate();
        this.ensureWorker();
        await this.call({ op: "keysToShare" }); // makes the sender keys before the hello
        this.enabled = true;
        this.worker.postMessage({ op: "enable", on: true });
        this.meeting.send(helloMessage(this.identityKey.publicKey));
        for (const identity of this.meeting.participants.keys()) this.member(identity).answered = true;
        for (const [identity, member] of this.members) {
          if (member.publicKey) member.safetyNumber ??= await safetyNumber(this.identityKey.publicKey, member.publicKey);
          this.worker.postMessage({ op: "mode", identity, mode: member.encrypting ? "encrypted" : "plain" });
          // Members already encrypting answered nobody's hello for us: give them our keys now.
          if (member.encrypting && !member.conflict) await this.share(identity, member);
        }
      } else {
        // Tell the room first: receivers keep our key for a moment, so nothing in flight is lost.
        this.meeting.send({ type: "e2ee_hello", public_key: E2EE_OFF_PUBLIC_KEY });
        this.enabled = false;
        this.worker.postMessage({ op: "enable", on: false });
        for (const [identity, member] of this.members) {
          member.answered = false;
          member.sentKids.clear();
          member.kids.clear();
          this.worker.postMessage({ op: "forget", identity });
        }
      }
      this.render();
    });
  }

  onHello(from, publicKeyText) {
    return this.run(async () => {
      if (from === this.meeting.identity || typeof publicKeyText !== "string") return;
      const member = this.member(from);
      if (publicKeyText === E2EE_OFF_PUBLIC_KEY) {
        this.memberOff(from, member);
        return;
      }
      let publicKey;
      try {
        publicKey = fromBase64Url(publicKeyText);
        if (publicKey.length !== PUBLIC_KEY_BYTES) throw new Error("wrong length");
      } catch {
        console.warn(`e2ee: ignoring a malformed identity key from ${from}`);
        return;
      }
      if (member.publicKey && member.publicKeyText !== publicKeyText) {
        // Someone (the server?) swapped the key: frames from this identity are dropped
        // and it gets none of our keys until it leaves and comes back.
        member.conflict = true;
        member.kids.clear();
        this.worker?.postMessage({ op: "mode", identity: from, mode: "encrypted" });
        this.worker?.postMessage({ op: "forget", identity: from });
        console.error(`e2ee: ${from} announced a different identity key: not trusted`);
        setStatus(`warning: ${from}'s encryption key changed — their media is blocked`, "error");
        this.render();
        return;
      }
      clearTimeout(member.offTimer);
      member.publicKey = publicKey;
      member.publicKeyText = publicKeyText;
      member.encrypting = true;
      this.worker?.postMessage({ op: "mode", identity: from, mode: "encrypted" });
      if (this.enabled && !member.conflict) {
        member.safetyNumber ??= await safetyNumber(this.identityKey.publicKey, publicKey);
        if (!member.answered) {
          this.meeting.send(helloMessage(this.identityKey.publicKey, from));
          member.answered = true;
        }
        await this.share(from, member);
      }
      this.render();
    });
  }

  memberOff(identity, member) {
    const hadOurKeys = member.sentKids.size > 0;
    member.encrypting = false;
    member.answered = false;
    member.sentKids.clear();
    member.kids.clear();
    if (this.worker) {
      this.worker.postMessage({ op: "mode", identity, mode: "plain" });
      clearTimeout(member.offTimer);
      member.offTimer = setTimeout(() => this.worker?.postMessage({ op: "forget", identity }), E2EE_OFF_GRACE_MS);
    }
    // It left the encrypted group: what we send from now on is under a key it lacks.
    if (this.enabled && hadOurKeys) this.worker.postMessage({ op: "rotate" });
    this.render();
  }

  onKey(from, blobText) {
    return this.run(async () => {
      const member = this.members.get(from);
      if (!this.enabled || !member?.encrypting || member.conflict || !member.publicKey) return;
      let key;
      try {
        key = await unwrapSenderKey(this.identityKey, this.meeting.identity, from, member.publicKey, fromBase64Url(blobText));
      } catch (err) {
        console.warn(`e2ee: a key from ${from} did not open (${err.code ?? err.message})`);
        return;
      }
      member.kids.add(key.kid);
      this.worker.postMessage({ op: "addKey", identity: from, kid: key.kid, baseKey: key.baseKey });
      this.render();
    });
  }

  onJoined(identity) {
    this.run(async () => {
      if (!this.enabled || identity === this.meeting.identity) return;
      this.member(identity).answered = true;
      this.meeting.send(helloMessage(this.identityKey.publicKey, identity));
    });
  }

  onLeft(identity) {
    this.run(async () => {
      const member = this.members.get(identity);
      if (!member) return;
      clearTimeout(member.offTimer);
      this.members.delete(identity);
      this.worker?.postMessage({ op: "forget", identity });
      this.worker?.postMessage({ op: "mode", identity, mode: "plain" });
      if (this.enabled) this.worker.postMessage({ op: "rotate" });
      this.render();
    });
  }

  /** Wrap for `identity` every key it should hold and has not been sent. */
  async share(identity, member) {
    const { keys } = await this.call({ op: "keysToShare" });
    for (const key of keys) await this.sendKey(identity, member, key);
  }

  async sendKey(identity, member, key) {
    if (member.sentKids.has(key.kid)) return;
    member.sentKids.add(key.kid);
    const blob = await wrapSenderKey(
      this.identityKey, this.meeting.identity, identity, member.publicKey, key.kid, key.baseKey,
    );
    this.meeting.send(keyMessage(identity, blob));
  }

  /** A new sender key (rotation): to every member in the encrypted group. */
  async distribute(key) {
    if (!this.enabled) return;
    for (const [identity, member] of this.members) {
      if (member.encrypting && !member.conflict && member.publicKey && member.answered) {
        await this.sendKey(identity, member, key);
      }
    }
  }

  rotate() {
    return this.run(async () => {
      if (this.enabled) this.worker.postMessage({ op: "rotate" });
    });
  }

  /** Whether this page encrypts and can decrypt every other member. */
  allEncrypted() {
    if (!this.enabled) return false;
    for (const identity of this.meeting.participants.keys()) {
      const member = this.members.get(identity);
      if (!member?.encrypting || member.conflict || member.kids.size === 0) return false;
    }
    return true;
  }

  state(identity) {
    const member = this.members.get(identity);
    if (!member?.encrypting) return ["plain", "not encrypted"];
    if (member.conflict) return ["conflict", "identity key changed — blocked"];
    if (!this.enabled) return ["locked-out", "encrypted — turn on Lock to see"];
    if (member.kids.size === 0) return ["waiting", "encrypted — waiting for key"];
    return ["encrypted", "end-to-end encrypted"];
  }

  isVerified(identity) {
    const member = this.members.get(identity);
    return Boolean(member?.publicKeyText && this.verified.get(`${identity} ${member.publicKeyText}`));
  }

  setVerified(identity, verified) {
    const member = this.members.get(identity);
    if (!member?.publicKeyText) return false;
    this.verified.set(`${identity} ${member.publicKeyText}`, Boolean(verified));
    this.render();
    return true;
  }

  /** The lock button and every remote tile's state, safety number and verified box. */
  render() {
    const all = this.allEncrypted();
    ui.lock.setAttribute("aria-pressed", String(this.enabled));
    ui.lock.dataset.allEncrypted = String(all);
    ui.lock.textContent = !this.enabled ? "Lock" : all ? "Locked · all encrypted" : "Locked · not everyone encrypted";
    for (const [identity, participant] of this.meeting.participants) {
      if (!participant.e2ee) {
        const box = document.createElement("div");
        box.className = "e2ee";
        const state = document.createElement("span");
        state.className = "e2ee-state";
        const number = document.createElement("code");
        number.className = "safety-number";
        const label = document.createElement("label");
        const check = document.createElement("input");
        check.type = "checkbox";
        check.addEventListener("change", () => this.setVerified(identity, check.checked));
        label.append(check, " verified");
        box.append(state, number, label);
        participant.tile.append(box);
        participant.e2ee = { box, state, number, label, check };
      }
      const view = participant.e2ee;
      const [kind, text] = this.state(identity);
      view.state.dataset.state = kind;
      view.state.textContent = text;
      const member = this.members.get(identity);
      const safety = this.enabled && member?.encrypting && !member.conflict ? member.safetyNumber : null;
      view.number.textContent = safety ? `safety number ${safety}` : "";
      view.number.hidden = !safety;
      view.label.hidden = !safety;
      view.check.checked = this.isVerified(identity);
    }
  }

  /** Per member: what the tests and the UI know. */
  snapshot() {
    const out = {};
    for (const identity of this.meeting.participants.keys()) {
      const member = this.members.get(identity);
      const kids = [...(member?.kids ?? [])];
      const used = this.frames[identity]?.kid;
      out[identity] = {
        encrypted: Boolean(member?.encrypting && !member.conflict),
        state: this.state(identity)[0],
        // The KID of the last frame that opened, or else the newest key held.
        keyId: kids.includes(used) ? used : kids.length ? Math.max(...kids) : null,
        keyIds: kids.sort((a, b) => a - b),
        safetyNumber: this.enabled && member?.encrypting ? member.safetyNumber : null,
        verified: this.isVerified(identity),
      };
    }
    return out;
  }

  close() {
    this.worker?.terminate();
    this.worker = null;
    for (const member of this.members.values()) clearTimeout(member.offTimer);
  }
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
    this.e2ee = new EndToEnd(this);
    this.carried = null; // the DataChannels of the connection this one replaces
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
        if (msg.participant?.identity) this.e2ee.onJoined(msg.participant.identity);
        break;
      case "participant_left":
        this.removeParticipant(msg.identity);
        this.e2ee.onLeft(msg.identity);
        break;
      case "e2ee_hello":
        this.e2ee.onHello(msg.from, msg.public_key);
        break;
      case "e2ee_key":
        this.e2ee.onKey(msg.from, msg.blob);
        break;
      case "track_published":
        this.addSubscription(msg.track);
        break;
      case "track_unpublished":
        this.removeSubscription(msg.track_id);
        break;
      case "connection_stats":
        connectionPanel.onServerStats(msg);
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
    ui.lock.disabled = !this.e2ee.supported;

    this.pc = this.createPeerConnection();
    // Chromium applies a frame transform only if it is there before media flows, so
    // every sender and receiver goes through the Worker from the start (frames pass
    // unchanged until someone turns E2EE on).
    if (this.e2ee.supported) this.e2ee.ensureWorker();
    // Chat and files: their own channels on their own transport (docs/DATA_CHANNELS.md).
    // With the Lock on, chat and files are sealed by the E2EE Worker (docs/E2EE.md).
    this.channels = new DataChannels(this.pc, { log: ui.chatLog }, (id) => this.participants.get(id)?.name, this.e2ee);
    // After a reconnect, the files of the last connection go on here (resumed).
    if (this.carried) this.channels.adopt(this.carried);
    this.carried = null;
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
    const config = { bundlePolicy: "balanced", rtcpMuxPolicy: "require", iceServers: [] };
    if (ENCODED_STREAMS) config.encodedInsertableStreams = true;
    const pc = new RTCPeerConnection(config);
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
      if (track.kind === "video") preferSendVideoCodec(transceiver);
      this.publications.push({ transceiver, label, track });
      this.e2ee.attachSender(transceiver, track.kind);
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
    this.e2ee.render();
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
      this.e2ee.attachReceiver(sub.transceiver, sub.track);
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

  /** Drop the connection without leaving, as a network change does (see reconnect()). */
  drop() {
    this.state = "closed";
    const ws = this.ws;
    if (ws) {
      ws.onclose = null;
      ws.onmessage = null;
    }
    this.teardown();
    ws?.close();
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
    this.e2ee.close();
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
    ui.lock.disabled = true;
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

/** Publish video as VP8 only: the one video codec frame encryption supports. */
function preferSendVideoCodec(transceiver) {
  if (typeof transceiver.setCodecPreferences !== "function") return;
  const capabilities = RTCRtpReceiver.getCapabilities?.("video");
  if (!capabilities) return;
  const codecs = capabilities.codecs.filter((codec) => {
    const mime = codec.mimeType.toLowerCase();
    return mime === SEND_VIDEO_CODEC || mime === "video/rtx";
  });
  try {
    if (codecs.some((codec) => codec.mimeType.toLowerCase() === SEND_VIDEO_CODEC)) transceiver.setCodecPreferences(codecs);
  } catch (err) {
    console.warn(`keeping default codecs for sending: ${err.message}`);
  }
}

let meeting = null;
// The "Connection" button's panel (connection.js): reads the meeting when open.
const connectionPanel = new ConnectionPanel(() => meeting);

function join(token, room) {
  ui.form.hidden = true;
  meeting = new Meeting(token, room);
  meeting.start();
}

/**
 * Drop this page's connection and join again with the same token, as a new session of
 * the same identity; its file transfers resume on the new data channels.
 */
function reconnect() {
  const previous = meeting;
  if (previous?.state !== "joined") return false;
  previous.drop();
  meeting = new Meeting(previous.token, previous.room);
  meeting.carried = previous.channels;
  meeting.start();
  return true;
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
  /** End-to-end encryption: this page's state, per member, and frame counters from the Worker. */
  e2ee: {
    get enabled() {
      return Boolean(meeting?.e2ee.enabled);
    },
    get allEncrypted() {
      return Boolean(meeting?.e2ee.allEncrypted());
    },
    setEnabled: async (on) => {
      await meeting?.e2ee.setEnabled(Boolean(on));
      return Boolean(meeting?.e2ee.enabled);
    },
    members: () => meeting?.e2ee.snapshot() ?? {},
    frames: () => structuredClone(meeting?.e2ee.frames ?? {}),
    sent: () => ({ ...(meeting?.e2ee.sent ?? {}) }),
    setVerified: (identity, verified) => meeting?.e2ee.setVerified(identity, verified) ?? false,
    rotate: () => meeting?.e2ee.rotate(),
  },
  mediaStats: async () => (meeting ? meeting.mediaStats() : {}),
  /** The connection panel: open()/close(), and what it shows now (snapshot()). */
  connection: connectionPanel.api,
  transportStats: async () => (meeting ? meeting.transportStats() : []),
  leave: () => meeting?.leave(),
  reconnect: () => reconnect(),
  chatReady: () => Boolean(meeting?.channels?.ready),
  sendChat: (body, to) => meeting?.channels?.sendChat(body, to) ?? false,
  chat: () => [...(meeting?.channels?.chat ?? [])],
  /** The wall clock in ms with sub-ms resolution, comparable between pages. */
  now: () => performance.timeOrigin + performance.now(),
  filesReceived: () => (meeting?.channels?.files() ?? []).reduce((sum, f) => sum + f.received, 0),
  dataErrors: () => [...(meeting?.channels?.errors ?? [])],
  files: () => meeting?.channels?.files() ?? [],
  /** Outgoing files that went on after a reconnect. */
  filesResumed: () => meeting?.channels?.resumed ?? 0,
  /** Send `size` random bytes as a file; resolves when every recipient verified it. */
  sendRandomFile: async (name, size, type = "application/octet-stream", to = undefined) => {
    const bytes = new Uint8Array(size);
    for (let i = 0; i < size; i += 65536) crypto.getRandomValues(bytes.subarray(i, Math.min(i + 65536, size)));
    const entry = await meeting.channels.sendFile(new File([bytes], name, { type }), to);
    const done = await entry.done;
    return { verifiedBy: done.verifiedBy, declinedBy: done.declinedBy, transfer: done.transfer };
  },
  /** Send `text` repeated `times` as a file (a known plaintext); like sendRandomFile. */
  sendTextFile: async (name, text, times, type = "text/plain", to = undefined) => {
    const file = new File([text.repeat(times)], name, { type });
    const done = await (await meeting.channels.sendFile(file, to)).done;
    return { verifiedBy: done.verifiedBy, declinedBy: done.declinedBy, transfer: done.transfer };
  },
};

ui.mic.addEventListener("click", () => meeting?.toggle("audio", ui.mic, "Mute mic", "Unmute mic"));
ui.cam.addEventListener("click", () => meeting?.toggle("video", ui.cam, "Camera off", "Camera on"));
ui.leave.addEventListener("click", () => meeting?.leave());
ui.lock.addEventListener("click", () => {
  meeting?.e2ee.setEnabled(!meeting.e2ee.enabled).catch((err) => setStatus(`encryption: ${err.message}`, "error"));
});
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
