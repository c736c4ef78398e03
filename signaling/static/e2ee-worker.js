// The meeting page's frame transforms for end-to-end encryption (docs/E2EE.md).
//
// One module Worker per page runs every sender and receiver transform, so all of the
// page's outgoing frames share one SenderKeys object and no (KID, CTR) is used twice.
// The page (app.js) talks to it with postMessage; identity keys, wrapping and the
// WebSocket stay in the page.
//
// ## E2EE on and off, and key distribution (the page's design)
//
// E2EE is opt-in per page (the "Lock" button); nothing in the room requires it.
//
// * Turning it on: the page makes its X25519 identity key (once per session), this
//   Worker makes its SenderKeys (once per session) and starts encrypting every frame
//   the page sends, and the page sends `e2ee_hello` to the room.
// * A page with E2EE on that gets a hello from X answers with its own hello to X
//   (once, unless X turned off in between) and wraps for X every key of
//   keysToShare() it has not yet sent X (`e2ee_key`). The newcomer rule of the spec
//   follows: on `participant_joined` it sends its hello to the newcomer.
// * New sender keys: this Worker rotates when SenderKeys' timer says so; the page
//   asks it to rotate when a member leaves the room or leaves the encrypted group
//   (turns off). Each new key is wrapped for every member that announced E2EE.
// * Turning it off: the page sends an `e2ee_hello` whose public_key is 32 zero bytes
//   ("AAA…A", 43 characters). That is a low-order point, never a real identity key,
//   so it cannot be confused with one; the server relays it like any hello (it
//   drops fields it does not know, so a flag could not pass). Receivers then expect
//   plaintext from X, forget the keys X gave them (after a short grace, in which a
//   frame that still opens under X's key is decrypted and anything else passes as
//   plaintext), stop sending X keys and rotate their own key, so X cannot read what
//   follows. The off page forgets every key it received; its own SenderKeys stays,
//   and turning on again re-announces the same identity key and re-shares.
//   The off notice is not authenticated: a server forging one only makes a receiver
//   pass X's still-encrypted frames to the decoder (which fails) and label X "not
//   encrypted" — it never turns ciphertext into plaintext or sends a key anywhere.
//
// Receiving, per sender identity, whatever this page's own state:
//   "plain"     X never announced E2EE (or turned it off): frames pass unchanged and
//               the tile says "not encrypted".
//   "encrypted" X announced E2EE: a frame opens under a key X sent us, or it is
//               dropped; never passed on as it came. A page that is off (or that
//               never got X's key) therefore shows nothing of X.
// Sending: with E2EE on every frame is encrypted (VP8 and Opus only; anything else is
// dropped, never sent in clear); with it off frames pass unchanged.
//
// Chat and files (docs/E2EE.md, "Chat and files") are sealed and opened here too, since
// the keys live here: the page (channels.js) asks with a request id and gets a reply,
// {op:"reply", id, ...result} or {op:"reply", id, error: code}. Each is sealed under the
// key active at that moment, with that key's data key (HKDF labels of its own, so its
// CTRs never meet the frames'). A file keeps its offer's key for all of its chunks, on
// both sides, whatever rotates meanwhile. Data requests: {op:"sealChat", text, to},
// {op:"openChat", identity, sealed, to}, {op:"sealFile", name, sha256, plainSize, mime},
// {op:"sealChunk", handle, index, data}, {op:"openFile", identity, sealed, plainSize,
// mime}, {op:"openChunk", handle, index, data}, {op:"endFile", handle}.
//
// Messages from the page: {op:"enable", on}, {op:"mode", identity, mode},
// {op:"addKey", identity, kid, baseKey}, {op:"forget", identity}, {op:"rotate"},
// {op:"keysToShare", id}, {op:"keyFrame", identity}; and, for the
// createEncodedStreams fallback, {op:"stream", readable, writable, options}.
// To the page: {op:"newKey", kid, baseKey}, {op:"reply", id, keys},
// {op:"stats", frames, sent, sendKid} (sendKid: the KID frames are sent under, or
// null while sending is off; frames[identity].kid: the KID the last frame opened with).

import {
  E2EEError,
  ReceiverKeyring,
  SenderKeys,
  clearPrefixLength,
  openChat,
  openFileOffer,
  parseHeader,
  sealChat,
  sealFile,
} from "./e2ee.js";

const STATS_INTERVAL_MS = 250;
const ROTATION_CHECK_MS = 1000;

const nowS = () => performance.now() / 1000;

let sendEnabled = false;
let senderKeys = null;
let senderKeysReady = null;
const modes = new Map(); // identity -> "plain" | "encrypted"
const keyrings = new Map(); // identity -> ReceiverKeyring
const frames = {}; // identity -> {decrypted, dropped, passed, kid}
const sent = { encrypted: 0, dropped: 0, plain: 0 };
const receivers = new Map(); // identity -> Set of video transformers (for key frame requests)
let statsDirty = false;
const files = new Map(); // handle -> OutgoingFile | IncomingFile, while a transfer runs
let nextFileHandle = 1;

function counters(identity) {
  return (frames[identity] ??= { decrypted: 0, dropped: 0, passed: 0, kid: null });
}

function ensureSenderKeys() {
  senderKeysReady ??= SenderKeys.create(nowS()).then((keys) => {
    senderKeys = keys;
    return keys;
  });
  return senderKeysReady;
}

function codecOf(frame, kind) {
  const mime = frame.getMetadata?.().mimeType;
  if (mime) return mime;
  // Chromium leaves mimeType out of some audio frames; the page only sends Opus.
  if (kind === "audio") return "opus";
  throw new E2EEError("unsupported_codec", "frame without a codec");
}

async function encryptFrame(frame, controller, kind) {
  if (!sendEnabled) {
    sent.plain += 1;
    controller.enqueue(frame);
    return;
  }
  try {
    const keys = senderKeys ?? (await ensureSenderKeys());
    frame.data = await keys.encryptFrame(frame.data, codecOf(frame, kind), nowS());
    sent.encrypted += 1;
    controller.enqueue(frame);
  } catch (err) {
    // Never let a frame out in clear while E2EE is on.
    sent.dropped += 1;
    if (!(err instanceof E2EEError)) console.warn(`e2ee: dropped an outgoing frame: ${err.message}`);
  }
  statsDirty = true;
}

async function decryptFrame(frame, controller, identity, kind) {
  const count = counters(identity);
  statsDirty = true;
  const keyring = keyrings.get(identity);
  const mode = modes.get(identity) ?? "plain";
  if (keyring === undefined) {
    if (mode === "plain") {
      count.passed += 1;
      controller.enqueue(frame);
    } else {
      count.dropped += 1;
    }
    return;
  }
  try {
    const codec = codecOf(frame, kind);
    const data = frame.data;
    frame.data = await keyring.decryptFrame(data, codec, nowS());
    count.decrypted += 1;
    count.kid = parseHeader(new Uint8Array(data, clearPrefixLength(codec, data))).kid;
    controller.enqueue(frame);
  } catch {
    // In "plain" mode a keyring is only kept for the grace after X turned off: what
    // does not open is X's plaintext.
    if (mode === "plain") {
      count.passed += 1;
      controller.enqueue(frame);
    } else {
      count.dropped += 1;
    }
  }
}

function attach(readable, writable, options, transformer = null) {
  const { side, kind, identity } = options;
  let transform;
  if (side === "send") {
    transform = (frame, controller) => encryptFrame(frame, controller, kind);
  } else {
    counters(identity);
    if (transformer && kind === "video") {
      if (!receivers.has(identity)) receivers.set(identity, new Set());
      receivers.get(identity).add(transformer);
    }
    transform = (frame, controller) => decryptFrame(frame, controller, identity, kind);
  }
  readable
    .pipeThrough(new TransformStream({ transform }))
    .pipeTo(writable)
    .catch(() => {})
    .finally(() => receivers.get(identity)?.delete(transformer));
}

function requestKeyFrame(identity) {
  for (const transformer of receivers.get(identity) ?? []) {
    try {
      // Frames dropped while we had no key left the decoder without a reference.
      transformer.sendKeyFrameRequest?.().catch(() => {});
    } catch {
      // Not supported here: the receiver asks for one itself after a while.
    }
  }
}

function fileOf(handle) {
  const file = files.get(handle);
  if (file === undefined) throw new E2EEError("e2ee_error", "no such file");
  return file;
}

function keyringOf(identity) {
  const keyring = keyrings.get(identity);
  if (keyring === undefined) throw new E2EEError("unknown_kid", `no key from ${identity}`);
  return keyring;
}

/** A chat or file request: [result, transferables], or null for any other op. */
async function dataOp(msg) {
  switch (msg.op) {
    case "sealChat": {
      const sealed = await sealChat(await ensureSenderKeys(), msg.text, msg.to, nowS());
      return [{ sealed }, [sealed.buffer]];
    }
    case "openChat":
      return [{ text: await openChat(keyringOf(msg.identity), msg.sealed, msg.to, nowS()) }, []];
    case "sealFile": {
      const file = await sealFile(await ensureSenderKeys(), msg, nowS());
      const handle = nextFileHandle++;
      files.set(handle, file);
      return [{ handle, sealed: file.sealed, size: file.size }, []];
    }
    case "openFile": {
      const file = await openFileOffer(keyringOf(msg.identity), msg.sealed, msg.plainSize, msg.mime, nowS());
      const handle = nextFileHandle++;
      files.set(handle, file);
      return [{ handle, name: file.name, sha256: file.sha256 }, []];
    }
    case "sealChunk": {
      const data = await fileOf(msg.handle).sealChunk(msg.index, msg.data);
      return [{ data }, [data.buffer]];
    }
    case "openChunk": {
      const data = await fileOf(msg.handle).openChunk(msg.index, msg.data);
      return [{ data }, [data.buffer]];
    }
    case "endFile":
      files.delete(msg.handle);
      return [{}, []];
    default:
      return null;
  }
}

async function onMessage(msg) {
  let done;
  try {
    done = await dataOp(msg);
  } catch (err) {
    // Never the plaintext or a key in a reply: a code and a short reason only.
    self.postMessage({ op: "reply", id: msg.id, error: err.code ?? "e2ee_error", message: err.message });
    return;
  }
  if (done !== null) {
    const [result, transferables] = done;
    self.postMessage({ op: "reply", id: msg.id, ...result }, transferables);
    return;
  }
  switch (msg.op) {
    case "enable":
      if (msg.on) await ensureSenderKeys();
      sendEnabled = Boolean(msg.on);
      statsDirty = true; // the page learns the send KID (or that there is none) soon
      break;
    case "mode":
      modes.set(msg.identity, msg.mode);
      break;
    case "addKey": {
      let keyring = keyrings.get(msg.identity);
      if (keyring === undefined) {
        keyring = new ReceiverKeyring();
        keyrings.set(msg.identity, keyring);
      }
      try {
        await keyring.addKey(msg.kid, msg.baseKey, nowS());
      } catch (err) {
        console.warn(`e2ee: key ${msg.kid} from ${msg.identity} refused (${err.code ?? err.message})`);
        break;
      }
      const count = counters(msg.identity);
      count.kid ??= msg.kid;
      requestKeyFrame(msg.identity);
      break;
    }
    case "forget":
      keyrings.delete(msg.identity);
      break;
    case "rotate": {
      if (!senderKeys) break;
      const key = await senderKeys.rotate(nowS());
      self.postMessage({ op: "newKey", kid: key.kid, baseKey: key.baseKey });
      break;
    }
    case "keysToShare": {
      const keys = await ensureSenderKeys();
      const share = keys.keysToShare(nowS()).map((key) => ({ kid: key.kid, baseKey: key.baseKey }));
      self.postMessage({ op: "reply", id: msg.id, keys: share });
      break;
    }
    case "keyFrame":
      requestKeyFrame(msg.identity);
      break;
    case "stream":
      attach(msg.readable, msg.writable, msg.options);
      break;
    default:
      console.warn(`e2ee worker: unknown op ${msg.op}`);
  }
}

// Messages are handled one after another, so an addKey is in place before a later
// mode change or forget for the same identity.
let queue = Promise.resolve();
self.onmessage = (event) => {
  queue = queue.then(() => onMessage(event.data)).catch((err) => console.warn(`e2ee worker: ${err.message}`));
};

self.onrtctransform = (event) => {
  const transformer = event.transformer;
  attach(transformer.readable, transformer.writable, transformer.options, transformer);
};

setInterval(async () => {
  if (sendEnabled && senderKeys?.rotationDue(nowS())) {
    const key = await senderKeys.rotate(nowS());
    self.postMessage({ op: "newKey", kid: key.kid, baseKey: key.baseKey });
  }
}, ROTATION_CHECK_MS);

setInterval(() => {
  if (!statsDirty) return;
  statsDirty = false;
  const sendKid = sendEnabled && senderKeys ? senderKeys.current.kid : null;
  self.postMessage({ op: "stats", frames, sent, sendKid });
}, STATS_INTERVAL_MS);
