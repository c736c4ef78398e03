// The control and file data channels of the meeting page (docs/DATA_CHANNELS.md).
//
// Both channels ride one SCTP association on a transport of their own (the server
// answers without BUNDLE). The server stamps the sender on everything it relays.
// Files: announce (name, size, type, SHA-256), wait for "file_accepted", send
// 16 KiB chunks (4-byte transfer number + bytes) while bufferedAmount stays under
// a high-water mark, and let the receiver check the hash on arrival.
//
// With E2EE on (docs/E2EE.md, "Chat and files") a chat goes out with `sealed` instead
// of `body`, and a file with its name and SHA-256 sealed and each chunk sealed; the
// E2EE Worker, which holds the keys, seals and opens them. What arrives sealed is shown
// with a lock, or as "encrypted … you cannot read" without the sender's key (and such
// a file is declined); what arrives in clear while this page is locked is labelled
// "not encrypted", as media tiles are.
//
// Transfers survive this page's reconnect (docs/DATA_CHANNELS.md, "Resuming after a
// reconnect"): the channels of the new connection adopt the old ones' files, offer the
// interrupted outgoing ones again with `resume`, and continue from the server's offset.
// A recipient whose sender reconnects sees file_paused, then file_resumed, and keeps
// appending. Files this page was receiving when it reconnected are lost to it: the
// server dropped it from them, so it says to ask for them again.

import { MAX_SEALED_CHAT_BYTES, SEALED_CHUNK_PLAIN_BYTES, fromBase64Url, toBase64Url } from "./e2ee.js";

export const CHUNK_BYTES = 16 * 1024;
const HIGH_WATER = 1024 * 1024;
const LOW_WATER = 256 * 1024;
// A sealed message may come before its sender's key (keys travel over the WebSocket):
// a locked page retries this long before it calls the message unreadable.
const KEY_WAIT_MS = 4000;
const KEY_RETRY_MS = 200;
const UNREADABLE_CHAT = "encrypted message you cannot read";
const encoder = new TextEncoder();

/** An E2EE Worker refusal, with its code (unknown_kid, decrypt_failed, ...). */
class SealError extends Error {
  constructor(code, message) {
    super(message ?? code);
    this.code = code;
  }
}

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
  /**
   * `ui`: {log, form, input, fileInput}; `names`: identity -> display name; `e2ee`: the
   * page's end-to-end encryption (app.js EndToEnd: `enabled`, `worker`, `call(request)`).
   */
  constructor(pc, ui, names, e2ee = null) {
    this.ui = ui;
    this.names = names;
    this.e2ee = e2ee;
    this.controlQueue = Promise.resolve(); // incoming control messages, shown in order
    this.sendQueue = Promise.resolve(); // outgoing chat, sent in order
    this.control = pc.createDataChannel("control");
    this.file = pc.createDataChannel("file");
    this.file.binaryType = "arraybuffer";
    this.file.bufferedAmountLowThreshold = LOW_WATER;
    this.chat = []; // what the log shows: {from, body, to, self}
    this.errors = [];
    this.outgoing = new Map(); // file id -> {data, name, progress, transfer, verifiedBy}
    this.incoming = new Map(); // transfer -> {offer, parts, received, progress, verified}
    this.nextId = 1;
    this.resumed = 0; // outgoing files continued after a reconnect
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

  /**
   * Take over the transfers of `previous`, the channels of this page's last connection.
   * Outgoing files it had not finished go out again with `resume` once these open.
   */
  adopt(previous) {
    Object.assign(this, {
      outgoing: previous.outgoing, incoming: previous.incoming, nextId: previous.nextId,
      chat: previous.chat, errors: previous.errors, resumed: previous.resumed,
    });
    for (const incoming of this.incoming.values()) {
      if (incoming.verified !== null || incoming.interrupted) continue;
      // The server dropped this page from the transfer when its connection went.
      incoming.interrupted = true;
      incoming.row.label.textContent = `${incoming.name ?? "encrypted file"}: interrupted by the reconnect — ask ${this.name(incoming.offer.from)} to send it again`;
    }
    this.opened.then(() => {
      for (const entry of this.outgoing.values()) this.resume(entry);
    });
  }

  /** Offer an interrupted outgoing file again, to continue where the relay stopped. */
  resume(entry) {
    if (entry.settled || entry.cancelled || entry.error) return;
    if (entry.encrypted) {
      // Its key lived in the E2EE Worker of the old connection: it cannot go on.
      entry.cancelled = true;
      if (entry.transfer !== null) this.file.send(JSON.stringify({ type: "file_cancel", transfer: entry.transfer }));
      entry.row.label.textContent = `${entry.name}: interrupted by the reconnect — send it again`;
      entry.reject(new Error("interrupted by the reconnect"));
      return;
    }
    entry.resuming = true;
    entry.row.label.textContent = `Resuming ${entry.name}…`;
    this.file.send(JSON.stringify({ ...entry.offer, resume: true }));
  }

  get ready() {
    return this.control.readyState === "open" && this.file.readyState === "open";
  }

  name(identity) {
    return this.names(identity) ?? identity;
  }

  /** Whether this page has E2EE on: what it sends is sealed, and it can open. */
  get locked() {
    return Boolean(this.e2ee?.enabled && this.e2ee.worker);
  }

  /** One request to the E2EE Worker: its reply, or a SealError. */
  async crypt(request) {
    if (!this.e2ee?.worker) throw new SealError("e2ee_off", "end-to-end encryption is off");
    const reply = await this.e2ee.call(request);
    if (reply.error) throw new SealError(reply.error, reply.message);
    return reply;
  }

  /** `crypt` for opening, waiting a little for a sender key that may still be on its way. */
  async open(request) {
    const deadline = performance.now() + KEY_WAIT_MS;
    for (;;) {
      try {
        return await this.crypt(request);
      } catch (err) {
        if (err.code !== "unknown_kid" || !this.locked || performance.now() >= deadline) throw err;
        await new Promise((resolve) => setTimeout(resolve, KEY_RETRY_MS));
      }
    }
  }

  // -- control ---------------------------------------------------------------

  /** Send a chat line (sealed if this page is locked); false if it cannot go. */
  sendChat(body, to = undefined) {
    if (!body || !this.ready) return false;
    const sealed = this.locked;
    if (sealed && encoder.encode(body).length > MAX_SEALED_CHAT_BYTES) return false;
    const message = { type: "chat", id: `m${this.nextId++}` };
    if (to) message.to = to;
    this.sendQueue = this.sendQueue
      .then(async () => {
        if (sealed) {
          const reply = await this.crypt({ op: "sealChat", text: body, to });
          message.sealed = toBase64Url(reply.sealed);
        } else {
          message.body = body;
        }
        this.control.send(JSON.stringify(message));
      })
      .catch((err) => this.addLine({ from: "server", body: `not sent: ${err.message}`, notice: true }));
    this.addLine({ from: "you", body, to, self: true, e2ee: sealed ? "encrypted" : "clear" });
    return true;
  }

  onControl(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      return;
    }
    const at = performance.timeOrigin + performance.now();
    // In order: a sealed chat waits for the Worker (or for its key) before later lines.
    this.controlQueue = this.controlQueue
      .then(() => this.handleControl(msg, at))
      .catch((err) => console.warn(`chat: ${err.message}`));
  }

  async chatLine(msg, at) {
    const line = { from: msg.from, name: msg.name, to: msg.to, at };
    if (typeof msg.sealed !== "string") {
      return { ...line, body: msg.body, e2ee: "clear", flagClear: this.locked };
    }
    if (this.locked) {
      try {
        const reply = await this.open({
          op: "openChat", identity: msg.from, sealed: fromBase64Url(msg.sealed), to: msg.to,
        });
        return { ...line, body: reply.text, e2ee: "encrypted" };
      } catch (err) {
        console.warn(`chat: a sealed message from ${msg.from} did not open (${err.code ?? err.message})`);
      }
    }
    return { ...line, body: UNREADABLE_CHAT, e2ee: "unreadable" };
  }

  async handleControl(msg, at) {
    switch (msg.type) {
      case "chat":
        this.addLine(await this.chatLine(msg, at));
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
    item.append(who);
    if (line.e2ee) item.dataset.e2ee = line.e2ee;
    if (line.e2ee === "encrypted" || line.e2ee === "unreadable") {
      const lock = document.createElement("span");
      lock.className = "lock";
      lock.textContent = " 🔒";
      lock.title = line.e2ee === "encrypted" ? "end-to-end encrypted" : "end-to-end encrypted; no key to read it";
      item.append(lock);
    }
    if (line.e2ee === "unreadable") body.className = "unreadable";
    item.append(body);
    if (line.e2ee === "clear" && line.flagClear) {
      const clear = document.createElement("span");
      clear.className = "not-encrypted";
      clear.textContent = " (not encrypted)";
      item.append(clear);
    }
    this.ui.log.append(item);
    this.ui.log.scrollTop = this.ui.log.scrollHeight;
    return item;
  }

  // -- files: sending ---------------------------------------------------------

  async sendFile(file, to = undefined) {
    if (!this.ready) throw new Error("the file channel is not open");
    const data = await file.arrayBuffer();
    const id = `f${this.nextId++}`;
    const sealed = this.locked;
    const entry = {
      id, name: file.name, size: data.byteLength, data, sent: 0, transfer: null,
      verifiedBy: [], corruptAt: [], declinedBy: [], error: null, done: null, encrypted: sealed, handle: null,
      offer: null, resuming: false, settled: false,
    };
    entry.done = new Promise((resolve, reject) => {
      entry.resolve = (value) => {
        entry.settled = true;
        resolve(value);
      };
      entry.reject = (err) => {
        entry.settled = true;
        reject(err);
      };
    });
    entry.row = this.fileRow(`Sending ${file.name}${sealed ? " 🔒" : ""}`, data.byteLength);
    const mime = file.type || "application/octet-stream";
    const sha256 = await sha256Hex(data);
    let offer;
    if (sealed) {
      // Name and hash sealed; the media type stays in clear for the room's type rules,
      // and the size too (the server counts the bytes; the ciphertext shows it anyway).
      const reply = await this.crypt({ op: "sealFile", name: file.name, sha256, plainSize: data.byteLength, mime });
      entry.handle = reply.handle;
      offer = {
        type: "file_offer", id, size: reply.size, plain_size: data.byteLength, mime,
        sealed: toBase64Url(reply.sealed),
      };
    } else {
      offer = { type: "file_offer", id, name: file.name, size: data.byteLength, mime, sha256 };
    }
    if (to) offer.to = to;
    entry.offer = offer;
    this.outgoing.set(id, entry);
    this.file.send(JSON.stringify(offer));
    return entry;
  }

  async pump(entry) {
    const header = new DataView(new ArrayBuffer(4));
    header.setUint32(0, entry.transfer);
    // A sealed file goes in chunks of SEALED_CHUNK_PLAIN_BYTES, each sealed with its index.
    const step = entry.encrypted ? SEALED_CHUNK_PLAIN_BYTES : CHUNK_BYTES;
    let index = 0;
    while (entry.sent < entry.size && this.file.readyState === "open" && !entry.cancelled) {
      if (this.file.bufferedAmount > HIGH_WATER) {
        await new Promise((resolve) => {
          this.file.onbufferedamountlow = () => {
            this.file.onbufferedamountlow = null;
            resolve();
          };
        });
        continue;
      }
      const end = Math.min(entry.sent + step, entry.size);
      let payload = new Uint8Array(entry.data, entry.sent, end - entry.sent);
      if (entry.encrypted) {
        payload = (await this.crypt({ op: "sealChunk", handle: entry.handle, index, data: payload.slice() })).data;
      }
      index += 1;
      const chunk = new Uint8Array(4 + payload.length);
      chunk.set(new Uint8Array(header.buffer), 0);
      chunk.set(payload, 4);
      this.file.send(chunk);
      entry.sent = end;
      this.progress(entry.row, entry.sent, entry.size);
    }
    this.endFile(entry);
  }

  /** Release the Worker's state of a sealed transfer. */
  endFile(entry) {
    if (entry.handle === null || entry.handle === undefined) return;
    const { handle } = entry;
    entry.handle = null;
    this.crypt({ op: "endFile", handle }).catch(() => {});
  }

  /** Resolve a sent file's `done` once every recipient verified or declined it. */
  settle(entry) {
    const recipients = entry.recipients ?? [];
    const answered = entry.verifiedBy.length + entry.corruptAt.length + entry.declinedBy.length;
    if (answered === recipients.length) entry.resolve(entry);
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
        if (msg.resumed) {
          // Continue after the bytes the relay passed on; the results recipients gave
          // meanwhile come again after this message.
          Object.assign(entry, { resuming: false, sent: msg.offset, verifiedBy: [], corruptAt: [], declinedBy: [] });
          this.resumed += 1;
          entry.row.label.textContent = `Sending ${entry.name} (resumed)`;
        }
        this.pump(entry).catch((err) => {
          // Nothing goes out in clear instead: the transfer is cancelled.
          entry.cancelled = true;
          this.endFile(entry);
          this.file.send(JSON.stringify({ type: "file_cancel", transfer: entry.transfer }));
          entry.row.label.textContent = `${entry.name}: not sent (${err.message})`;
          entry.reject(err);
        });
        break;
      }
      case "file_received": {
        const entry = [...this.outgoing.values()].find((e) => e.transfer === msg.transfer);
        if (!entry) return;
        (msg.ok ? entry.verifiedBy : entry.corruptAt).push(msg.from);
        entry.row.label.textContent = `${entry.name}: ${msg.ok ? "verified" : "CORRUPT"} at ${this.name(msg.from)}`;
        this.settle(entry);
        break;
      }
      case "file_offer":
        this.onOffer(msg);
        break;
      case "file_complete":
        this.finishIncoming(msg.transfer);
        break;
      case "file_paused":
      case "file_resumed":
        this.onPause(msg);
        break;
      case "file_cancel": {
        const incoming = this.incoming.get(msg.transfer);
        if (incoming) {
          incoming.row.label.textContent = `${incoming.name ?? "encrypted file"}: cancelled (${msg.reason})`;
          incoming.ready?.then(() => this.endFile(incoming));
        }
        const entry = [...this.outgoing.values()].find((e) => e.transfer === msg.transfer);
        if (entry && msg.recipient) {
          entry.declinedBy.push(msg.recipient);
          this.settle(entry);
        } else if (entry) {
          entry.cancelled = true;
          entry.reject(new Error(`transfer ended: ${msg.reason}`));
        }
        break;
      }
      case "error": {
        this.errors.push(msg);
        const entry = msg.id ? this.outgoing.get(msg.id) : undefined;
        const text = describeFileError(msg.code, msg.message);
        if (entry?.resuming) {
          entry.resuming = false;
          entry.error = msg;
          entry.row.label.textContent = `${entry.name}: not resumed — ${text}`;
          entry.reject(new Error(`not resumed: ${text}`));
        } else if (entry) {
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

  /** The sender of an incoming file went away (file_paused) or came back (file_resumed). */
  onPause(msg) {
    const incoming = this.incoming.get(msg.transfer);
    if (!incoming || incoming.verified !== null) return;
    const who = this.name(incoming.offer.from);
    const what = incoming.name ?? "encrypted file";
    if (msg.type === "file_paused") {
      incoming.pauses += 1;
      incoming.row.label.textContent = `${what}: paused — waiting for ${who} to reconnect`;
    } else if (msg.offset !== incoming.relayed) {
      // The server continues after what it relayed; this page must hold exactly that.
      this.file.send(JSON.stringify({ type: "file_cancel", transfer: msg.transfer }));
      incoming.row.label.textContent = `${what}: could not resume — declined`;
    } else {
      incoming.row.label.textContent = `${who} sends ${what} (resumed)`;
    }
  }

  onOffer(msg) {
    const encrypted = typeof msg.sealed === "string";
    const size = encrypted ? msg.plain_size : msg.size;
    const who = this.name(msg.from);
    // A file the room kept for members who came later (rooms.toml keep_files).
    const sends = msg.kept ? "shared earlier" : "sends";
    const incoming = {
      offer: msg, parts: [], received: 0, relayed: 0, pauses: 0, interrupted: false,
      verified: null, encrypted, unreadable: false,
      name: encrypted ? null : msg.name, sha256: encrypted ? null : msg.sha256, size, chunks: 0,
      handle: null, ready: null,
      row: this.fileRow(encrypted ? `${who} ${sends} an encrypted file 🔒` : `${who} ${sends} ${msg.name}`, size),
    };
    this.incoming.set(msg.transfer, incoming);
    if (!encrypted) {
      if (this.locked) incoming.row.label.textContent += " (not encrypted)";
      return;
    }
    // Chunks wait for this; they are opened in the order they came.
    incoming.ready = this.openOffer(msg, incoming).then(
      () => true,
      (err) => {
        console.warn(`file: a sealed offer from ${msg.from} did not open (${err.code ?? err.message})`);
        incoming.unreadable = true;
        incoming.row.label.textContent = `${who} sends an encrypted file you cannot read — declined`;
        this.file.send(JSON.stringify({ type: "file_cancel", transfer: msg.transfer }));
        return false;
      },
    );
  }

  async openOffer(msg, incoming) {
    if (!this.locked) throw new SealError("e2ee_off", "end-to-end encryption is off here");
    const reply = await this.open({
      op: "openFile", identity: msg.from, sealed: fromBase64Url(msg.sealed),
      plainSize: msg.plain_size, mime: msg.mime,
    });
    Object.assign(incoming, { handle: reply.handle, name: reply.name, sha256: reply.sha256 });
    const sends = msg.kept ? "shared earlier" : "sends";
    incoming.row.label.textContent = `${this.name(msg.from)} ${sends} ${reply.name} 🔒`;
  }

  onChunk(buffer) {
    if (buffer.byteLength < 4) return;
    const transfer = new DataView(buffer).getUint32(0);
    const incoming = this.incoming.get(transfer);
    if (!incoming) return;
    incoming.relayed += buffer.byteLength - 4; // what the server counts, sealed or not
    if (!incoming.encrypted) {
      incoming.parts.push(buffer.slice(4));
      incoming.received += buffer.byteLength - 4;
      this.progress(incoming.row, incoming.received, incoming.size);
      return;
    }
    const index = incoming.chunks++;
    const sealed = new Uint8Array(buffer, 4);
    incoming.parts.push(
      incoming.ready
        .then(async (ok) => {
          if (!ok) return null;
          const { data } = await this.crypt({ op: "openChunk", handle: incoming.handle, index, data: sealed });
          incoming.received += data.length;
          this.progress(incoming.row, incoming.received, incoming.size);
          return data;
        })
        .catch((err) => {
          console.warn(`file: chunk ${index} of transfer ${transfer} did not open (${err.code ?? err.message})`);
          return null;
        }),
    );
  }

  async finishIncoming(transfer) {
    const incoming = this.incoming.get(transfer);
    if (!incoming || incoming.verified !== null) return;
    if (incoming.encrypted && !(await incoming.ready)) return; // declined
    incoming.verified = false; // settling; set for real below
    const parts = await Promise.all(incoming.parts);
    this.endFile(incoming);
    const blob = new Blob(parts.filter((part) => part !== null), { type: incoming.offer.mime });
    const digest = await sha256Hex(await blob.arrayBuffer());
    incoming.verified =
      !parts.includes(null) && digest === incoming.sha256 && blob.size === incoming.size;
    incoming.digest = digest;
    this.file.send(JSON.stringify({ type: "file_received", transfer, ok: incoming.verified }));
    const { label } = incoming.row;
    const lock = incoming.encrypted ? " 🔒" : "";
    if (incoming.verified) {
      const link = document.createElement("a");
      link.href = URL.createObjectURL(blob);
      link.download = incoming.name;
      link.textContent = `${incoming.name} (verified, ${incoming.size} bytes)${lock}`;
      label.replaceChildren(link);
    } else {
      label.textContent = `${incoming.name}: ${parts.includes(null) ? "did not decrypt" : "SHA-256 mismatch"} — discarded`;
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
      name: f.name, size: f.size, from: f.offer.from, received: f.received,
      verified: f.verified, sha256: f.sha256, encrypted: f.encrypted, readable: !f.unreadable,
      pauses: f.pauses, interrupted: f.interrupted,
    }));
  }
}
