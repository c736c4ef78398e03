// The meeting page's connection panel: per participant, what the browser's
// getStats() and the server's `connection_stats` reply (docs/PROTOCOL.md) say about
// the connection, refreshed every second while the panel is open.
//
// The page runs one ICE+DTLS transport per m-section (docs/PROTOCOL.md, "m-sections
// and transports"), so every track has its own ICE pair, DTLS and SRTP: the panel
// shows them per track, next to the server's view of the same m-section (matched by
// mid; the data channels' transport by the ICE pair's port).
//
// The panel only reads the meeting (`getMeeting()` returns app.js's Meeting): its
// peer connection, participants, subscriptions, publications and E2EE state.

const REFRESH_MS = 1000;
const SERVER_REPLY_TIMEOUT_MS = 2000;
// Chromium's RTCTransportStats.tlsVersion is the record version in hex.
const TLS_VERSIONS = { FEFD: "DTLS 1.2", FEFC: "DTLS 1.3", "0303": "TLS 1.2", "0304": "TLS 1.3" };

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null) node.setAttribute(name, String(value));
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

const dash = "—";

function formatBitrate(bps) {
  if (bps === null || bps === undefined) return dash;
  if (bps >= 1e6) return `${(bps / 1e6).toFixed(2)} Mbit/s`;
  return `${(bps / 1e3).toFixed(1)} kbit/s`;
}

function formatMs(ms, digits = 1) {
  return ms === null || ms === undefined ? dash : `${ms.toFixed(digits)} ms`;
}

function formatLoss(lost, percent) {
  if (lost === null || lost === undefined) return dash;
  return percent === null || percent === undefined ? `${lost}` : `${lost} (${percent.toFixed(2)} %)`;
}

function formatEndpoint(endpoint) {
  if (!endpoint) return dash;
  const type = endpoint.type ? ` ${endpoint.type}` : "";
  return `${endpoint.address}:${endpoint.port}${type}`;
}

function formatPair(pair) {
  if (!pair) return dash;
  return `${formatEndpoint(pair.local)} ⇄ ${formatEndpoint(pair.remote)}${pair.protocol ? ` ${pair.protocol}` : ""}`;
}

function formatServerPair(ice) {
  if (!ice) return dash;
  const remote = ice.remote ? `${ice.remote.address}:${ice.remote.port}` : "not validated";
  return `${ice.local.address}:${ice.local.port} ⇄ ${remote}`;
}

function formatE2ee(e2ee) {
  if (!e2ee.on) return e2ee.state === "plain" || !e2ee.state ? "off" : `off (${e2ee.state})`;
  return e2ee.keyId === null ? "on · no key yet" : `on · key ${e2ee.keyId}`;
}

export class ConnectionPanel {
  constructor(getMeeting) {
    this.getMeeting = getMeeting;
    this.button = document.getElementById("connection");
    this.panel = document.getElementById("connection-panel");
    this.body = this.panel.querySelector(".connection-body");
    this.updated = this.panel.querySelector(".connection-updated");
    this.timer = null;
    this.refreshing = false;
    this.pendingServer = null; // {resolve, timer} while a request is in flight
    this.previous = new Map(); // stats id -> {bytes, timestamp}: bitrates over one refresh
    this.model = null;
    this.button.addEventListener("click", () => (this.isOpen ? this.close() : this.open()));
    this.panel.querySelector(".connection-close").addEventListener("click", () => this.close());
    // What the browser tests read (window.sfu.connection).
    this.api = {
      open: () => this.open(),
      close: () => this.close(),
      isOpen: () => this.isOpen,
      snapshot: () => structuredClone(this.model),
    };
  }

  get isOpen() {
    return !this.panel.hidden;
  }

  open() {
    this.panel.hidden = false;
    this.button.setAttribute("aria-pressed", "true");
    if (this.timer === null) this.timer = setInterval(() => this.refresh(), REFRESH_MS);
    this.refresh();
  }

  close() {
    this.panel.hidden = true;
    this.button.setAttribute("aria-pressed", "false");
    clearInterval(this.timer);
    this.timer = null;
    this.previous.clear();
  }

  /** The server's reply to our `connection_stats` request (app.js routes it here). */
  onServerStats(msg) {
    const pending = this.pendingServer;
    if (!pending) return;
    this.pendingServer = null;
    clearTimeout(pending.timer);
    pending.resolve(msg);
  }

  askServer(meeting) {
    this.onServerStats(null); // a reply that never came is given up on
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.pendingServer = null;
        resolve(null);
      }, SERVER_REPLY_TIMEOUT_MS);
      this.pendingServer = { resolve, timer };
      meeting.send({ type: "connection_stats" });
    });
  }

  async refresh() {
    if (this.refreshing || !this.isOpen) return;
    const meeting = this.getMeeting();
    if (!meeting || meeting.state !== "joined" || !meeting.pc) {
      this.model = null;
      this.body.replaceChildren(el("p", { class: "connection-empty" }, "Not in a meeting."));
      return;
    }
    this.refreshing = true;
    try {
      const [report, server] = await Promise.all([meeting.pc.getStats(), this.askServer(meeting)]);
      this.model = this.build(meeting, report, server);
      this.render(this.model);
    } catch (err) {
      console.warn(`connection panel: ${err.message}`);
    } finally {
      this.refreshing = false;
    }
  }

  /** Bits per second of a byte counter since the last refresh (null on the first). */
  bitrate(id, bytes, timestamp) {
    const before = this.previous.get(id);
    this.previous.set(id, { bytes, timestamp });
    if (!before || timestamp <= before.timestamp || bytes < before.bytes) return null;
    return ((bytes - before.bytes) * 8 * 1000) / (timestamp - before.timestamp);
  }

  /** The browser's side of one transport: DTLS, SRTP, and its selected ICE pair. */
  transportOf(report, transportId) {
    const t = transportId ? report.get(transportId) : undefined;
    if (!t) return null;
    const pairStats = t.selectedCandidatePairId ? report.get(t.selectedCandidatePairId) : undefined;
    const candidate = (id) => {
      const c = id ? report.get(id) : undefined;
      return c ? { address: c.address ?? c.ip ?? null, port: c.port ?? null, type: c.candidateType ?? null } : null;
    };
    const pair = pairStats
      ? {
          local: candidate(pairStats.localCandidateId),
          remote: candidate(pairStats.remoteCandidateId),
          protocol: report.get(pairStats.localCandidateId)?.protocol ?? null,
          rttMs: pairStats.currentRoundTripTime === undefined ? null : pairStats.currentRoundTripTime * 1000,
          state: pairStats.state ?? null,
        }
      : null;
    return {
      id: t.id,
      dtlsState: t.dtlsState ?? null,
      dtlsCipher: t.dtlsCipher ?? null,
      srtpCipher: t.srtpCipher ?? null,
      tlsVersion: t.tlsVersion ?? null,
      dtlsVersion: TLS_VERSIONS[(t.tlsVersion ?? "").toUpperCase()] ?? null,
      pair,
      bytes: (t.bytesSent ?? 0) + (t.bytesReceived ?? 0),
      timestamp: t.timestamp,
    };
  }

  /** The server's transport and track for a mid, from its reply. */
  static serverByMid(server) {
    const byMid = new Map();
    for (const transport of server?.transports ?? []) {
      for (const mid of transport.mids) byMid.set(mid, { transport, track: null });
      for (const track of [...transport.published, ...transport.received]) {
        byMid.set(track.mid, { transport, track });
      }
    }
    return byMid;
  }

  static serverTransport(transport) {
    if (!transport) return null;
    return {
      dtlsState: transport.dtls_state,
      dtlsVersion: transport.dtls_version,
      dtlsCipher: transport.dtls_cipher,
      srtpProfile: transport.srtp_profile,
      ice: transport.ice,
    };
  }

  build(meeting, report, server) {
    const serverMids = ConnectionPanel.serverByMid(server);
    const trackOfMid = new Map(); // mid -> {identity, kind, label, direction}
    for (const pub of meeting.publications) {
      const mid = pub.transceiver.mid;
      if (mid !== null && pub.transceiver.direction !== "stopped") {
        trackOfMid.set(mid, { identity: meeting.identity, kind: pub.track.kind, label: pub.label, direction: "send" });
      }
    }
    for (const sub of meeting.subscriptions.values()) {
      const mid = sub.transceiver?.mid;
      if (mid !== null && mid !== undefined && sub.transceiver.direction !== "stopped") {
        trackOfMid.set(mid, {
          identity: sub.track.identity,
          kind: sub.track.kind,
          label: sub.track.label,
          direction: "receive",
          trackId: sub.track.track_id,
        });
      }
    }

    const remoteInbound = new Map(); // outbound-rtp id -> remote-inbound-rtp
    report.forEach((s) => {
      if (s.type === "remote-inbound-rtp" && s.localId) remoteInbound.set(s.localId, s);
    });

    const tracks = [];
    const usedTransports = new Set();
    report.forEach((s) => {
      if (s.type !== "inbound-rtp" && s.type !== "outbound-rtp") return;
      const owner = s.mid !== undefined ? trackOfMid.get(s.mid) : undefined;
      if (!owner) return;
      const sending = s.type === "outbound-rtp";
      const bytes = sending ? s.bytesSent ?? 0 : s.bytesReceived ?? 0;
      const transport = this.transportOf(report, s.transportId);
      if (transport) usedTransports.add(transport.id);
      const serverSide = serverMids.get(s.mid);
      const serverTrack = serverSide?.track ?? null;
      let lost = null;
      let lossPercent = null;
      let jitterMs = null;
      let rttMs = null;
      if (sending) {
        // What the receiver (the SFU) reported in its RTCP receiver reports.
        const remote = remoteInbound.get(s.id);
        if (remote) {
          lost = remote.packetsLost ?? null;
          lossPercent = remote.fractionLost === undefined ? null : remote.fractionLost * 100;
          jitterMs = remote.jitter === undefined ? null : remote.jitter * 1000;
          rttMs = remote.roundTripTime === undefined ? null : remote.roundTripTime * 1000;
        }
      } else {
        lost = s.packetsLost ?? 0;
        const expected = (s.packetsReceived ?? 0) + Math.max(lost, 0);
        lossPercent = expected > 0 ? (Math.max(lost, 0) / expected) * 100 : 0;
        jitterMs = s.jitter === undefined ? null : s.jitter * 1000;
        rttMs = transport?.pair?.rttMs ?? null;
      }
      tracks.push({
        identity: owner.identity,
        mid: s.mid,
        kind: owner.kind,
        label: owner.label,
        direction: owner.direction,
        bitrateBps: this.bitrate(s.id, bytes, s.timestamp),
        bytes,
        packets: sending ? s.packetsSent ?? 0 : s.packetsReceived ?? 0,
        packetsLost: lost,
        lossPercent,
        jitterMs,
        rttMs,
        frames: sending ? s.framesEncoded ?? null : s.framesDecoded ?? null,
        transport,
        server: ConnectionPanel.serverTransport(serverSide?.transport),
        serverTrack: serverTrack && {
          packets: sending ? serverTrack.packets_received : serverTrack.packets_sent,
          packetsLost: serverTrack.packets_lost,
          fractionLost: serverTrack.fraction_lost ?? null,
          jitterMs: serverTrack.jitter_ms,
        },
      });
    });

    // The data channels' transport: no RTP stream names it; the server's data
    // transport is the one whose validated remote port is the browser's local port.
    const dataTransport = (server?.transports ?? []).find((t) => t.carries === "data");
    if (dataTransport) {
      let browser = null;
      report.forEach((s) => {
        if (s.type !== "transport" || usedTransports.has(s.id) || browser) return;
        const candidate = this.transportOf(report, s.id);
        if (candidate?.pair?.local?.port === dataTransport.ice.remote?.port) browser = candidate;
      });
      tracks.push({
        identity: meeting.identity,
        mid: dataTransport.mids[0] ?? null,
        kind: "data",
        label: "chat and files",
        direction: "send",
        bitrateBps: browser ? this.bitrate(browser.id, browser.bytes, browser.timestamp) : null,
        bytes: browser?.bytes ?? null,
        packets: null,
        packetsLost: null,
        lossPercent: null,
        jitterMs: null,
        rttMs: browser?.pair?.rttMs ?? null,
        frames: null,
        transport: browser,
        server: ConnectionPanel.serverTransport(dataTransport),
        serverTrack: null,
      });
    }

    const e2ee = meeting.e2ee;
    const members = e2ee.snapshot();
    const order = { audio: 0, video: 1, data: 2 };
    const participant = (identity, name, self) => ({
      identity,
      name,
      self,
      e2ee: self
        ? { on: Boolean(e2ee.enabled), state: e2ee.enabled ? "encrypted" : "plain", keyId: e2ee.enabled ? e2ee.sendKid ?? null : null }
        : {
            on: Boolean(members[identity]?.encrypted),
            state: members[identity]?.state ?? "plain",
            keyId: members[identity]?.keyId ?? null,
          },
      tracks: tracks
        .filter((t) => t.identity === identity)
        .sort((a, b) => order[a.kind] - order[b.kind] || String(a.mid).localeCompare(String(b.mid))),
    });
    return {
      updatedAt: Date.now(),
      serverAnswered: Boolean(server),
      signaling: {
        tlsVersion: server?.signaling?.tls_version ?? null,
        tlsCipher: server?.signaling?.tls_cipher ?? null,
      },
      participants: [
        participant(meeting.identity, meeting.identity, true),
        ...[...meeting.participants].map(([identity, p]) => participant(identity, p.name, false)),
      ],
    };
  }

  render(model) {
    this.updated.textContent = model.serverAnswered
      ? `updated ${new Date(model.updatedAt).toLocaleTimeString()}`
      : "server did not answer — browser values only";
    const signaling = el(
      "dl",
      { class: "connection-signaling" },
      el("dt", {}, "Signaling TLS"),
      el("dd", { "data-field": "tls-version" }, model.signaling.tlsVersion ?? dash),
      el("dt", {}, "Cipher"),
      el("dd", { "data-field": "tls-cipher" }, model.signaling.tlsCipher ?? dash),
    );
    this.body.replaceChildren(signaling, ...model.participants.map((p) => this.renderParticipant(p)));
  }

  renderParticipant(p) {
    const heading = el(
      "h3",
      {},
      p.self ? `${p.name} (you)` : p.name,
      " ",
      el("span", { class: "connection-e2ee", "data-field": "e2ee", "data-on": String(p.e2ee.on) }, `E2EE ${formatE2ee(p.e2ee)}`),
    );
    const section = el("section", { class: "connection-participant", "data-identity": p.identity }, heading);
    if (!p.tracks.length) {
      section.append(el("p", { class: "connection-empty" }, "no media yet"));
      return section;
    }
    const rows = [
      ["bitrate", "Bitrate", (t) => formatBitrate(t.bitrateBps)],
      ["loss", "Packets lost", (t) => formatLoss(t.packetsLost, t.lossPercent)],
      ["jitter", "Jitter", (t) => formatMs(t.jitterMs)],
      ["rtt", "RTT", (t) => formatMs(t.rttMs)],
      ["frames", "Frames", (t) => (t.frames === null || t.frames === undefined ? dash : String(t.frames))],
      ["ice", "ICE pair", (t) => formatPair(t.transport?.pair)],
      ["dtls", "DTLS", (t) => (t.transport ? `${t.transport.dtlsVersion ?? t.transport.tlsVersion ?? dash} · ${t.transport.dtlsCipher ?? dash} · ${t.transport.dtlsState ?? dash}` : dash)],
      ["srtp", "SRTP", (t) => t.transport?.srtpCipher ?? dash],
      ["server-ice", "Server ICE", (t) => formatServerPair(t.server?.ice)],
      ["server-dtls", "Server DTLS", (t) => (t.server ? `${t.server.dtlsVersion ?? dash} · ${t.server.dtlsCipher ?? dash}` : dash)],
      ["server-srtp", "Server SRTP", (t) => t.server?.srtpProfile ?? dash],
      [
        "server-loss",
        "Server loss / jitter",
        (t) => {
          const s = t.serverTrack;
          if (!s) return dash;
          const fraction = s.fractionLost === null ? "" : ` (${(s.fractionLost * 100).toFixed(2)} %)`;
          return `${s.packetsLost ?? dash}${fraction} / ${formatMs(s.jitterMs)}`;
        },
      ],
    ];
    const head = el(
      "tr",
      {},
      el("th", { scope: "col" }, ""),
      ...p.tracks.map((t) => el("th", { scope: "col" }, `${t.kind} ${t.direction === "send" && t.kind !== "data" ? "↑" : t.kind === "data" ? "⇅" : "↓"}`)),
    );
    const body = rows.map(([field, title, show]) =>
      el(
        "tr",
        {},
        el("th", { scope: "row" }, title),
        ...p.tracks.map((t) => el("td", { "data-field": field, "data-kind": t.kind, "data-mid": t.mid }, show(t))),
      ),
    );
    section.append(el("table", { class: "connection-tracks" }, el("thead", {}, head), el("tbody", {}, ...body)));
    return section;
  }
}
