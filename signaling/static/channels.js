// The control and file data channels of the meeting page (docs/DATA_CHANNELS.md).
//
// Both channels ride one SCTP association on a transport of their own (the server
// answers without BUNDLE). The server stamps the sender on everything it relays.
// Files: announce (name, size, type, SHA-256), wait for "file_accepted", send
// 16 KiB chunks (4-byte transfer number + bytes) while bufferedAmount stays under
// a high-water mark, and let the receiver check the hash on arrival.

export const CHUNK_BYTES = 16 * 1024;
const HIGH_WATER = 1024 * 1024;
const LOW_WATER = 256 * 1024;

const hex = (buffer) => [...new Uint8Array(buffer)].map((b) => b.toString(16).padStart(2, "0")).join("");

export async function sha256Hex(data) {
  return hex(await crypto.subtle.digest("SHA-256", data));
}

function describeFileError(code, message) {
  switch (code) {
    case "file_too_large":
    case "file_type_refused":
    case "forbidden":
    case "no_recipients":
    case "busy":
      return message;
    default:
      return `${code}: ${message}`;
  }
}

export class DataChannels {
  /** `ui`: {log, form, input, fileInput}; `names`: identity -> display name. */
  constructor(pc, ui, names) {
    this.ui = ui;
    this.names = names;
    this.control = pc.createDataChannel("control");
    this.file = pc.createDataChannel("file");
    this.file.binaryType = "arraybuffer";
    this.file.bufferedAmountLowThreshold = LOW_WATER;
    this.chat = []; // what the log shows: {from, body, to, self}
    this.errors = [];
    this.outgoing = new Map(); // file id -> {data, name, progress, transfer, verifiedBy}
    this.incoming = new Map(); // transfer -> {offer, parts, received, progress, verified}
    this.nextId = 1;
    this.control.onmessage = (event) => this.onControl(event.data);
    this.file.onmessage = (event) => this.onFile(event.data);
    this.opened = new Promise((resolve) => {
      const check = () => {
        if (this.control.readyState === "open" && this.file.readyState === "open") resolve();
      };
      this.control.onopen = check;
      this.file.onopen = check;
    });
  }

  get ready() {
    return this.control.readyState === "open" && this.file.readyState === "open";
  }

  name(identity) {
    return this.names(identity) ?? identity;
  }

  // -- control ---------------------------------------------------------------

  sendChat(body, to = undefined) {
    if (!body || !this.ready) return false;
    const message = { type: "chat", body, id: `m${this.nextId++}` };
    if (to) message.to = to;
    this.control.send(JSON.stringify(message));
    this.addLine({ from: "you", body, to, self: true });
    return true;
  }

  onControl(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      return;
    }
    switch (msg.type) {
      case "chat":
        this.addLine({ from: msg.from, name: msg.name, body: msg.body, to: msg.to, at: performance.timeOrigin + performance.now() });
        break;
      case "reaction":
        this.addLine({ from: msg.from, name: msg.name, body: msg.emoji, reaction: true });
        break;
      case "hand":
        this.addLine({ from: msg.from, name: msg.name, body: msg.raised ? "raised a hand" : "lowered a hand", reaction: true });
        break;
      case "notice":
        this.addLine({ from: "server", body: msg.text, notice: true });
        break;
      case "error":
        this.errors.push(msg);
        this.addLine({ from: "server", body: `not sent: ${msg.message}`, notice: true });
        break;
      default:
        break; // "sent" acknowledgements and newer message types
    }
  }

  addLine(line) {
    this.chat.push(line);
    const item = document.createElement("li");
    if (line.self) item.className = "self";
    if (line.notice) item.className = "notice";
    const who = document.createElement("strong");
    who.textContent = line.self ? "You" : line.notice ? "Server" : line.name || this.name(line.from);
    const body = document.createElement("span");
    body.textContent = line.to ? ` (to ${this.name(line.to)}) ${line.body}` : ` ${line.body}`;
    item.append(who, body);
    this.ui.log.append(item);
    this.ui.log.scrollTop = this.ui.log.scrollHeight;
    return item;
  }

  // -- files: sending ---------------------------------------------------------

  async sendFile(file, to = undefined) {
    if (!this.ready) throw new Error("the file channel is not open");
    const data = await file.arrayBuffer();
    const id = `f${this.nextId++}`;
    const entry = {
      id, name: file.name, size: data.byteLength, data, sent: 0, transfer: null,
      verifiedBy: [], error: null, done: null,
    };
    entry.done = new Promise((resolve, reject) => {
      entry.resolve = resolve;
      entry.reject = reject;
    });
    entry.row = this.fileRow(`Sending ${file.name}`, data.byteLength);
    this.outgoing.set(id, entry);
    const offer = {
      type: "file_offer", id, name: file.name, size: data.byteLength,
      mime: file.type || "application/octet-stream", sha256: await sha256Hex(data),
    };
    if (to) offer.to = to;
    this.file.send(JSON.stringify(offer));
    return entry;
  }

  async pump(entry) {
    const header = new DataView(new ArrayBuffer(4));
    header.setUint32(0, entry.transfer);
    while (entry.sent < entry.size && this.file.readyState === "open") {
      if (this.file.bufferedAmount > HIGH_WATER) {
        await new Promise((resolve) => {
          this.file.onbufferedamountlow = () => {
            this.file.onbufferedamountlow = null;
            resolve();
          };
        });
        continue;
      }
      const end = Math.min(entry.sent + CHUNK_BYTES, entry.size);
      const chunk = new Uint8Array(4 + end - entry.sent);
      chunk.set(new Uint8Array(header.buffer), 0);
      chunk.set(new Uint8Array(entry.data, entry.sent, end - entry.sent), 4);
      this.file.send(chunk);
      entry.sent = end;
      this.progress(entry.row, entry.sent, entry.size);
    }
  }

  // -- files: receiving -------------------------------------------------------

  onFile(data) {
    if (data instanceof ArrayBuffer) {
      this.onChunk(data);
      return;
    }
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return;
    }
    switch (msg.type) {
      case "file_accepted": {
        const entry = this.outgoing.get(msg.id);
        if (!entry) return;
        entry.transfer = msg.transfer;
        entry.recipients = msg.recipients;
        this.pump(entry);
        break;
      }
      case "file_received": {
        const entry = [...this.outgoing.values()].find((e) => e.transfer === msg.transfer);
        if (!entry) return;
        if (msg.ok) entry.verifiedBy.push(msg.from);
        entry.row.label.textContent = `${entry.name}: ${msg.ok ? "verified" : "CORRUPT"} at ${this.name(msg.from)}`;
        if (entry.verifiedBy.length === (entry.recipients ?? []).length) entry.resolve(entry);
        break;
      }
      case "file_offer":
        this.incoming.set(msg.transfer, {
          offer: msg, parts: [], received: 0, verified: null,
          row: this.fileRow(`${this.name(msg.from)} sends ${msg.name}`, msg.size),
        });
        break;
      case "file_complete":
        this.finishIncoming(msg.transfer);
        break;
      case "file_cancel": {
        const incoming = this.incoming.get(msg.transfer);
        if (incoming) incoming.row.label.textContent = `${incoming.offer.name}: cancelled (${msg.reason})`;
        break;
      }
      case "error": {
        this.errors.push(msg);
        const entry = msg.id ? this.outgoing.get(msg.id) : undefined;
        const text = describeFileError(msg.code, msg.message);
        if (entry) {
          entry.error = msg;
          entry.row.label.textContent = `${entry.name}: refused — ${text}`;
          entry.reject(new Error(text));
        } else {
          this.addLine({ from: "server", body: `file: ${text}`, notice: true });
        }
        break;
      }
      default:
        break;
    }
  }

  onChunk(buffer) {
    if (buffer.byteLength < 4) return;
    const transfer = new DataView(buffer).getUint32(0);
    const incoming = this.incoming.get(transfer);
    if (!incoming) return;
    incoming.parts.push(buffer.slice(4));
    incoming.received += buffer.byteLength - 4;
    this.progress(incoming.row, incoming.received, incoming.offer.size);
  }

  async finishIncoming(transfer) {
    const incoming = this.incoming.get(transfer);
    if (!incoming || incoming.verified !== null) return;
    const blob = new Blob(incoming.parts, { type: incoming.offer.mime });
    const digest = await sha256Hex(await blob.arrayBuffer());
    incoming.verified = digest === incoming.offer.sha256 && blob.size === incoming.offer.size;
    incoming.digest = digest;
    this.file.send(JSON.stringify({ type: "file_received", transfer, ok: incoming.verified }));
    const { label } = incoming.row;
    if (incoming.verified) {
      const link = document.createElement("a");
      link.href = URL.createObjectURL(blob);
      link.download = incoming.offer.name;
      link.textContent = `${incoming.offer.name} (verified, ${incoming.offer.size} bytes)`;
      label.replaceChildren(link);
    } else {
      label.textContent = `${incoming.offer.name}: SHA-256 mismatch — discarded`;
    }
  }

  fileRow(text, size) {
    const item = document.createElement("li");
    item.className = "file";
    const label = document.createElement("span");
    label.textContent = text;
    const bar = document.createElement("progress");
    bar.max = Math.max(size, 1);
    bar.value = 0;
    item.append(label, bar);
    this.ui.log.append(item);
    return { item, label, bar };
  }

  progress(row, done, size) {
    row.bar.value = done;
    if (done >= size) row.bar.classList.add("done");
  }

  /** What tests read: received files and their hash check. */
  files() {
    return [...this.incoming.values()].map((f) => ({
      name: f.offer.name, size: f.offer.size, from: f.offer.from, received: f.received,
      verified: f.verified, sha256: f.offer.sha256,
    }));
  }
}
