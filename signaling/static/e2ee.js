// End-to-end media encryption for the meeting page: SFrame (RFC 9605) frames,
// X25519-wrapped sender keys and safety numbers, on WebCrypto alone.
//
// docs/E2EE.md is the specification; benchmarks/loadgen/e2ee.py is the Python twin and
// produces the same bytes. Nothing here touches the DOM, so the module also runs in the
// Worker behind an RTCRtpScriptTransform. Times are passed in as seconds (nowS), never
// read here. KID and CTR are plain Numbers, so this side handles values up to 2^53 - 1
// (the wire format allows 2^64 - 1; a sender would rotate long before).
//
// Chat and files use the same sender keys with a data key and salt of their own (HKDF
// labels "sfu-e2ee v1 data key/salt"), so their CTRs never meet the frames' under one
// key; see "Chat and files" in docs/E2EE.md.

export const CIPHER_SUITE = 0x0004; // AES_128_GCM_SHA256_128, RFC 9605 section 4.5
export const KEY_BYTES = 16;
export const NONCE_BYTES = 12;
export const TAG_BYTES = 16;
export const BASE_KEY_BYTES = 16;
export const PUBLIC_KEY_BYTES = 32;

export const VP8_KEYFRAME_CLEAR_BYTES = 10; // frame tag, start code, width and height
export const VP8_DELTA_CLEAR_BYTES = 3; // frame tag
export const OPUS_CLEAR_BYTES = 0;
export const SUPPORTED_CODECS = Object.freeze(["opus", "vp8"]);

export const ROTATION_INTERVAL_S = 600;
export const ACTIVATION_DELAY_S = 1;
export const KEY_GRACE_S = 5;

export const MAX_SEALED_CHAT_BYTES = 8192; // UTF-8 bytes of one encrypted chat message
export const SEALED_CHUNK_PLAIN_BYTES = 16 * 1024 - 64; // plaintext per file chunk
export const FILE_TID_BYTES = 16;
export const MAX_FILE_NAME_CHARS = 255;

export const WRAP_VERSION = 1;
export const WRAP_BLOB_BYTES = 1 + NONCE_BYTES + 8 + BASE_KEY_BYTES + TAG_BYTES;
const MAX_IDENTITY_BYTES = 1024;
const SAFETY_NUMBER_GROUPS = 12;

const encoder = new TextEncoder();
const WRAP_LABEL = encoder.encode("sfu-e2ee v1 key wrap");
const SAFETY_NUMBER_LABEL = encoder.encode("sfu-e2ee v1 safety number");
const SFRAME_KEY_LABEL = encoder.encode("SFrame 1.0 Secret key ");
const DATA_KEY_LABEL = encoder.encode("sfu-e2ee v1 data key ");
const DATA_SALT_LABEL = encoder.encode("sfu-e2ee v1 data salt ");
const CHAT_CONTEXT_LABEL = encoder.encode("sfu-e2ee v1 chat");
const FILE_OFFER_CONTEXT_LABEL = encoder.encode("sfu-e2ee v1 file offer");
const FILE_CHUNK_CONTEXT_LABEL = encoder.encode("sfu-e2ee v1 file chunk");
const SFRAME_SALT_LABEL = encoder.encode("SFrame 1.0 Secret salt ");
const TWO_32 = 2 ** 32;

const subtle = () => globalThis.crypto.subtle;

/** Every failure here; `code` matches the Python side (bad_header, decrypt_failed, ...). */
export class E2EEError extends Error {
  constructor(code, message) {
    super(message);
    this.name = "E2EEError";
    this.code = code;
  }
}

/** A Uint8Array over an ArrayBuffer or any view, without copying. */
export function toBytes(data) {
  if (data instanceof Uint8Array) return data;
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  throw new TypeError("expected an ArrayBuffer or a typed array");
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

function checkUint(value, name) {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new RangeError(`${name} must be an integer in 0..2^53-1, got ${value}`);
  }
}

/** `value` big-endian in exactly `length` bytes. */
function uintBytes(value, length) {
  const out = new Uint8Array(length);
  let rest = value;
  for (let i = length - 1; i >= 0; i--) {
    out[i] = rest % 256;
    rest = Math.floor(rest / 256);
  }
  return out;
}

function compactLength(value) {
  let length = 1;
  for (let rest = Math.floor(value / 256); rest > 0; rest = Math.floor(rest / 256)) length++;
  return length;
}

// ------------------------------------------------------------------ SFrame header

/** The SFrame header for (kid, ctr), RFC 9605 section 4.3, minimally encoded. */
export function encodeHeader(kid, ctr) {
  checkUint(kid, "kid");
  checkUint(ctr, "ctr");
  let config = 0;
  const tail = [];
  if (kid < 8) {
    config |= kid << 4;
  } else {
    const length = compactLength(kid);
    config |= 0x80 | ((length - 1) << 4);
    tail.push(uintBytes(kid, length));
  }
  if (ctr < 8) {
    config |= ctr;
  } else {
    const length = compactLength(ctr);
    config |= 0x08 | (length - 1);
    tail.push(uintBytes(ctr, length));
  }
  return concat(Uint8Array.of(config), ...tail);
}

function readField(bytes, offset, extended, bits, name) {
  if (!extended) return [bits, offset];
  const end = offset + bits + 1;
  if (end > bytes.length) throw new E2EEError("bad_header", `header truncated in ${name}`);
  let value = 0;
  for (let i = offset; i < end; i++) {
    if (value > (Number.MAX_SAFE_INTEGER - bytes[i]) / 256) {
      throw new E2EEError("bad_header", `${name} beyond 2^53-1 is not supported here`);
    }
    value = value * 256 + bytes[i];
  }
  if (value < 8 || compactLength(value) !== bits + 1) {
    throw new E2EEError("bad_header", `${name} not minimally encoded`);
  }
  return [value, end];
}

/** {kid, ctr, length} from the start of `data`; E2EEError "bad_header" if invalid. */
export function parseHeader(data) {
  const bytes = toBytes(data);
  if (bytes.length === 0) throw new E2EEError("bad_header", "empty header");
  const config = bytes[0];
  const [kid, afterKid] = readField(bytes, 1, (config & 0x80) !== 0, (config >> 4) & 7, "kid");
  const [ctr, length] = readField(bytes, afterKid, (config & 0x08) !== 0, config & 7, "ctr");
  return { kid, ctr, length };
}

// ------------------------------------------------------------------ SFrame keys

async function hkdfSha256(ikm, info, length) {
  const key = await subtle().importKey("raw", ikm, "HKDF", false, ["deriveBits"]);
  // An empty salt is HMAC's all-zero key: RFC 9605's HKDF-Extract("", base_key).
  const params = { name: "HKDF", hash: "SHA-256", salt: new Uint8Array(0), info };
  return new Uint8Array(await subtle().deriveBits(params, key, length * 8));
}

/** [sframe_key_label, sframe_salt_label] for `kid` (RFC 9605 section 4.4.2). */
export function sframeLabels(kid) {
  checkUint(kid, "kid");
  const suffix = concat(uintBytes(kid, 8), uintBytes(CIPHER_SUITE, 2));
  return [concat(SFRAME_KEY_LABEL, suffix), concat(SFRAME_SALT_LABEL, suffix)];
}

/** {key, salt} as raw bytes: sframe_key and sframe_salt for `kid` from `baseKey`. */
export async function deriveKeySalt(kid, baseKey) {
  const [keyLabel, saltLabel] = sframeLabels(kid);
  const base = toBytes(baseKey);
  const [key, salt] = await Promise.all([
    hkdfSha256(base, keyLabel, KEY_BYTES),
    hkdfSha256(base, saltLabel, NONCE_BYTES),
  ]);
  return { key, salt };
}

/** [data key label, data salt label] for `kid`: chat and files, never frames. */
export function dataLabels(kid) {
  checkUint(kid, "kid");
  const suffix = concat(uintBytes(kid, 8), uintBytes(CIPHER_SUITE, 2));
  return [concat(DATA_KEY_LABEL, suffix), concat(DATA_SALT_LABEL, suffix)];
}

/** {key, salt} for chat and files: deriveKeySalt with the data labels. */
export async function deriveDataKeySalt(kid, baseKey) {
  const [keyLabel, saltLabel] = dataLabels(kid);
  const base = toBytes(baseKey);
  const [key, salt] = await Promise.all([
    hkdfSha256(base, keyLabel, KEY_BYTES),
    hkdfSha256(base, saltLabel, NONCE_BYTES),
  ]);
  return { key, salt };
}

/** sframe_salt XOR ctr as a 12-byte big-endian integer (RFC 9605 section 4.4.3). */
export function sframeNonce(salt, ctr) {
  const nonce = Uint8Array.from(salt);
  const ctrBytes = uintBytes(ctr, 8);
  for (let i = 0; i < 8; i++) nonce[NONCE_BYTES - 8 + i] ^= ctrBytes[i];
  return nonce;
}

/**
 * The derived AES-GCM key and salt for one (kid, base key): for frames, or with
 * `{data: true}` for chat and files (another key and salt from the same base key).
 */
export class FrameKey {
  constructor(kid, aesKey, salt) {
    this.kid = kid;
    this._aesKey = aesKey;
    this._salt = salt;
  }

  static async create(kid, baseKey, { data = false } = {}) {
    if (toBytes(baseKey).length !== BASE_KEY_BYTES) {
      throw new RangeError(`base key must be ${BASE_KEY_BYTES} bytes`);
    }
    const { key, salt } = await (data ? deriveDataKeySalt : deriveKeySalt)(kid, baseKey);
    const aesKey = await subtle().importKey("raw", key, "AES-GCM", false, ["encrypt", "decrypt"]);
    return new FrameKey(kid, aesKey, salt);
  }

  /** Uint8Array `header | AEAD(plaintext)` with aad = header | metadata. */
  async seal(ctr, metadata, plaintext) {
    const header = encodeHeader(this.kid, ctr);
    const params = {
      name: "AES-GCM",
      iv: sframeNonce(this._salt, ctr),
      additionalData: concat(header, toBytes(metadata)),
      tagLength: TAG_BYTES * 8,
    };
    const sealed = await subtle().encrypt(params, this._aesKey, toBytes(plaintext));
    return concat(header, new Uint8Array(sealed));
  }

  /** The plaintext (Uint8Array); E2EEError "decrypt_failed" if anything was altered. */
  async open(ctr, header, metadata, ciphertext) {
    const params = {
      name: "AES-GCM",
      iv: sframeNonce(this._salt, ctr),
      additionalData: concat(header, metadata),
      tagLength: TAG_BYTES * 8,
    };
    try {
      return new Uint8Array(await subtle().decrypt(params, this._aesKey, ciphertext));
    } catch {
      throw new E2EEError("decrypt_failed", "frame failed authentication");
    }
  }
}

// ------------------------------------------------------------------ codecs

/** "opus" or "vp8" from a codec name or MIME type ("audio/opus", "video/VP8"). */
export function normalizeCodec(codec) {
  const name = String(codec).toLowerCase().split("/").pop();
  if (!SUPPORTED_CODECS.includes(name)) {
    throw new E2EEError("unsupported_codec", `no E2EE framing for ${codec} (only Opus and VP8)`);
  }
  return name;
}

/**
 * Leading bytes left readable: VP8 keyframes (frame tag bit 0 clear) keep 10, VP8
 * interframes 3, Opus none. The first byte stays in clear, so the answer is the same
 * for the plain and the encrypted frame. H.264 is not supported.
 */
export function clearPrefixLength(codec, frame) {
  if (normalizeCodec(codec) === "opus") return OPUS_CLEAR_BYTES;
  const bytes = toBytes(frame);
  if (bytes.length === 0) throw new E2EEError("bad_frame", "empty VP8 frame");
  return bytes[0] & 1 ? VP8_DELTA_CLEAR_BYTES : VP8_KEYFRAME_CLEAR_BYTES;
}

// ------------------------------------------------------------------ senders

/**
 * One sender's key; each frame takes the next CTR from 0 upwards. Every track of a
 * sender must share this one object (one Worker for all of the sender's transforms),
 * so that no (KID, CTR) pair is ever used twice.
 */
export class SenderKey {
  constructor(kid, baseKey, frameKey) {
    this.kid = kid;
    this.baseKey = baseKey;
    this._frameKey = frameKey;
    this.nextCtr = 0;
    this._dataKey = null;
    this.nextDataCtr = 0;
  }

  static async create(kid, baseKey) {
    const bytes = Uint8Array.from(toBytes(baseKey));
    return new SenderKey(kid, bytes, await FrameKey.create(kid, bytes));
  }

  /** A key with a random 16-byte base key. */
  static async generate(kid) {
    return SenderKey.create(kid, globalThis.crypto.getRandomValues(new Uint8Array(BASE_KEY_BYTES)));
  }

  _takeCtr() {
    // Taken before any await, so concurrent calls never share a CTR.
    const ctr = this.nextCtr;
    if (ctr > Number.MAX_SAFE_INTEGER) throw new E2EEError("counter_exhausted", "rotate the key");
    this.nextCtr = ctr + 1;
    return ctr;
  }

  /** A raw SFrame ciphertext (Uint8Array) under the next CTR. */
  async encrypt(plaintext, metadata = new Uint8Array(0)) {
    const ctr = this._takeCtr();
    return this._frameKey.seal(ctr, metadata, plaintext);
  }

  /** ArrayBuffer `clear prefix | SFrame header | ciphertext and tag` of an encoded frame. */
  async encryptFrame(frame, codec) {
    const bytes = toBytes(frame);
    const prefixLength = clearPrefixLength(codec, bytes);
    if (bytes.length < prefixLength) {
      throw new E2EEError("bad_frame", `frame of ${bytes.length} bytes is shorter than its clear prefix`);
    }
    const prefix = bytes.slice(0, prefixLength);
    const sframe = await this.encrypt(bytes.subarray(prefixLength), prefix);
    return concat(prefix, sframe).buffer;
  }

  /** The FrameKey for chat and files (its own key, salt and CTR space). */
  dataKey() {
    this._dataKey ??= FrameKey.create(this.kid, this.baseKey, { data: true });
    return this._dataKey;
  }

  /** Take `count` consecutive data CTRs (a file: its offer and chunks); the first. */
  reserveDataCtrs(count) {
    const first = this.nextDataCtr;
    if (!(count >= 1) || first + count - 1 > Number.MAX_SAFE_INTEGER) {
      throw new E2EEError("counter_exhausted", "rotate the key");
    }
    this.nextDataCtr = first + count;
    return first;
  }

  /** Uint8Array `SFrame header | ciphertext and tag` of chat or a file offer. */
  async sealData(plaintext, context) {
    const ctr = this.reserveDataCtrs(1);
    return (await this.dataKey()).seal(ctr, context, plaintext);
  }
}

/**
 * A sender's key schedule: rotate(nowS) makes the next key (KID one higher) for the
 * page to wrap to every current recipient; frames switch to it activationDelayS later.
 */
export class SenderKeys {
  constructor(current, nowS, options) {
    this.current = current;
    this.pending = null;
    this.rotationIntervalS = options.rotationIntervalS ?? ROTATION_INTERVAL_S;
    this.activationDelayS = options.activationDelayS ?? ACTIVATION_DELAY_S;
    this._activateAt = nowS;
    this._rotatedAt = nowS;
    this._nextKid = current.kid + 1;
  }

  static async create(nowS, options = {}) {
    return new SenderKeys(await SenderKey.generate(options.firstKid ?? 0), nowS, options);
  }

  _advance(nowS) {
    if (this.pending !== null && nowS >= this._activateAt) {
      this.current = this.pending;
      this.pending = null;
    }
  }

  /** Start a new key (someone left, or the timer fired); resolves to it, to be sent. */
  async rotate(nowS) {
    this._advance(nowS);
    // The KID is taken before awaiting, so overlapping rotations never share one.
    const kid = this._nextKid++;
    const key = await SenderKey.generate(kid);
    if (this.pending === null || this.pending.kid < kid) {
      this.pending = key;
      this._activateAt = nowS + this.activationDelayS;
      this._rotatedAt = nowS;
    }
    return key;
  }

  /** Whether the timer says it is time to rotate. */
  rotationDue(nowS) {
    return nowS - this._rotatedAt >= this.rotationIntervalS;
  }

  /** What a newcomer needs: the key in use, and the next one if one is pending. */
  keysToShare(nowS) {
    this._advance(nowS);
    return this.pending === null ? [this.current] : [this.current, this.pending];
  }

  /** ArrayBuffer of the frame encrypted under whichever key is active at nowS. */
  encryptFrame(frame, codec, nowS) {
    this._advance(nowS);
    return this.current.encryptFrame(frame, codec);
  }

  /** The key frames, chat and files use at nowS. */
  active(nowS) {
    this._advance(nowS);
    return this.current;
  }
}

// ------------------------------------------------------------------ receivers

/**
 * The keys one remote sender has given us. A key older than the newest one in use is
 * retired graceS after the first frame under a newer key opens.
 */
export class ReceiverKeyring {
  constructor({ graceS = KEY_GRACE_S } = {}) {
    this.graceS = graceS;
    this._keys = new Map();
    this._baseKeys = new Map();
    this._dataKeys = new Map();
    this._retireAt = new Map();
    this._retiredBelow = 0;
  }

  /** KIDs held, oldest first. */
  get kids() {
    return [...this._keys.keys()].sort((a, b) => a - b);
  }

  /** Hold baseKey under kid; E2EEError "stale_key" if a key this old was retired. */
  async addKey(kid, baseKey, nowS) {
    this.expire(nowS);
    if (this._keys.has(kid)) return;
    if (kid < this._retiredBelow) throw new E2EEError("stale_key", `key ${kid} was retired`);
    const frameKey = await FrameKey.create(kid, baseKey);
    if (!this._keys.has(kid)) {
      this._keys.set(kid, frameKey);
      this._baseKeys.set(kid, Uint8Array.from(toBytes(baseKey)));
    }
  }

  /** Drop keys whose grace has run out. */
  expire(nowS) {
    for (const [kid, deadline] of this._retireAt) {
      if (nowS >= deadline) {
        this._retireAt.delete(kid);
        this._keys.delete(kid);
        this._baseKeys.delete(kid);
        this._dataKeys.delete(kid);
        this._retiredBelow = Math.max(this._retiredBelow, kid + 1);
      }
    }
  }

  _keyUsed(kid, nowS) {
    for (const older of this._keys.keys()) {
      if (older < kid && !this._retireAt.has(older)) this._retireAt.set(older, nowS + this.graceS);
    }
  }

  /** Plaintext (Uint8Array) of a raw SFrame ciphertext. */
  async decrypt(sframe, metadata, nowS) {
    this.expire(nowS);
    const bytes = toBytes(sframe);
    const { kid, ctr, length } = parseHeader(bytes);
    const key = this._keys.get(kid);
    if (key === undefined) throw new E2EEError("unknown_kid", `no key for kid ${kid}`);
    if (bytes.length < length + TAG_BYTES) {
      throw new E2EEError("decrypt_failed", "ciphertext shorter than the tag");
    }
    const plaintext = await key.open(ctr, bytes.subarray(0, length), toBytes(metadata), bytes.subarray(length));
    this._keyUsed(kid, nowS);
    return plaintext;
  }

  /** ArrayBuffer of the encoded frame inside `clear prefix | SFrame header | ciphertext`. */
  async decryptFrame(data, codec, nowS) {
    const bytes = toBytes(data);
    const prefixLength = clearPrefixLength(codec, bytes);
    if (bytes.length < prefixLength + 1 + TAG_BYTES) {
      throw new E2EEError("bad_frame", `encrypted frame of ${bytes.length} bytes is too short`);
    }
    const prefix = bytes.slice(0, prefixLength);
    const plaintext = await this.decrypt(bytes.subarray(prefixLength), prefix, nowS);
    return concat(prefix, plaintext).buffer;
  }

  /** {plaintext, key, ctr} of a sealed chat or file offer; key is the data key that opened it. */
  async openData(sealed, context, nowS) {
    this.expire(nowS);
    const bytes = toBytes(sealed);
    const { kid, ctr, length } = parseHeader(bytes);
    if (!this._keys.has(kid)) throw new E2EEError("unknown_kid", `no key for kid ${kid}`);
    if (!this._dataKeys.has(kid)) {
      this._dataKeys.set(kid, FrameKey.create(kid, this._baseKeys.get(kid), { data: true }));
    }
    const key = await this._dataKeys.get(kid);
    if (bytes.length < length + TAG_BYTES) {
      throw new E2EEError("decrypt_failed", "ciphertext shorter than the tag");
    }
    const plaintext = await key.open(ctr, bytes.subarray(0, length), toBytes(context), bytes.subarray(length));
    this._keyUsed(kid, nowS);
    return { plaintext, key, ctr };
  }
}

// ------------------------------------------------------------------ chat and files

function lengthPrefixedText(text) {
  const raw = encoder.encode(text);
  if (raw.length > 0xffff) throw new RangeError("text too long for a context");
  return concat(uintBytes(raw.length, 2), raw);
}

/** What a sealed chat is bound to: its addressee ("" for the room). */
export function chatContext(to) {
  return concat(CHAT_CONTEXT_LABEL, lengthPrefixedText(to ?? ""));
}

/** What a sealed file offer is bound to: the clear size and media type. */
export function fileOfferContext(plainSize, mime) {
  checkUint(plainSize, "plainSize");
  return concat(FILE_OFFER_CONTEXT_LABEL, uintBytes(plainSize, 8), lengthPrefixedText(mime));
}

/** What chunk `index` of transfer `tid` is bound to (no reordering, no splicing). */
export function fileChunkContext(tid, index) {
  const id = toBytes(tid);
  if (id.length !== FILE_TID_BYTES) throw new RangeError(`transfer id must be ${FILE_TID_BYTES} bytes`);
  return concat(FILE_CHUNK_CONTEXT_LABEL, id, uintBytes(index, 4));
}

/** Chunks of a sealed file of `plainSize` bytes. */
export function sealedChunkCount(plainSize) {
  return Math.ceil(plainSize / SEALED_CHUNK_PLAIN_BYTES);
}

/** Bytes the chunks of a sealed file carry: chunk i has CTR offerCtr + 1 + i. */
export function sealedFileSize(kid, offerCtr, plainSize) {
  const count = sealedChunkCount(plainSize);
  let size = plainSize + count * TAG_BYTES;
  for (let i = 0; i < count; i++) size += encodeHeader(kid, offerCtr + 1 + i).length;
  return size;
}

/** Uint8Array of a sealed chat message (the base64url of it is the `sealed` field). */
export async function sealChat(senderKeys, text, to, nowS) {
  const raw = encoder.encode(text);
  if (raw.length === 0 || raw.length > MAX_SEALED_CHAT_BYTES) {
    throw new RangeError(`a chat message is 1 to ${MAX_SEALED_CHAT_BYTES} bytes`);
  }
  return senderKeys.active(nowS).sealData(raw, chatContext(to));
}

const sealedBytes = (sealed) => (typeof sealed === "string" ? fromBase64Url(sealed) : sealed);

/** The text of a sealed chat (bytes, or the base64url `sealed` field); E2EEError if it does not open. */
export async function openChat(keyring, sealed, to, nowS) {
  const { plaintext } = await keyring.openData(sealedBytes(sealed), chatContext(to), nowS);
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(plaintext);
  } catch {
    throw new E2EEError("bad_sealed", "chat is not UTF-8");
  }
}

/** A file being sent sealed: the key its chunks use and its offer's fields. */
export class OutgoingFile {
  constructor(key, dataKey, offerCtr, tid, plainSize, mime, sealed) {
    this.key = key;
    this._dataKey = dataKey;
    this.offerCtr = offerCtr;
    this.tid = tid;
    this.plainSize = plainSize;
    this.mime = mime;
    this.sealed = sealed; // Uint8Array
    this.size = sealedFileSize(key.kid, offerCtr, plainSize);
  }

  /** Uint8Array of chunk `index` (SEALED_CHUNK_PLAIN_BYTES of the file at index times that). */
  sealChunk(index, plaintext) {
    if (!Number.isInteger(index) || index < 0 || index >= sealedChunkCount(this.plainSize)) {
      throw new RangeError(`no chunk ${index} in a file of ${this.plainSize} bytes`);
    }
    return this._dataKey.seal(this.offerCtr + 1 + index, fileChunkContext(this.tid, index), plaintext);
  }
}

/** Seal a file's name and SHA-256 (hex) and reserve the CTRs of its offer and chunks. */
export async function sealFile(senderKeys, { name, sha256, plainSize, mime }, nowS) {
  if (!name || [...name].length > MAX_FILE_NAME_CHARS) {
    throw new RangeError(`a file name is 1 to ${MAX_FILE_NAME_CHARS} characters`);
  }
  const key = senderKeys.active(nowS);
  const tid = globalThis.crypto.getRandomValues(new Uint8Array(FILE_TID_BYTES));
  const manifest = encoder.encode(JSON.stringify({ name, sha256, tid: toBase64Url(tid) }));
  const offerCtr = key.reserveDataCtrs(1 + sealedChunkCount(plainSize));
  const dataKey = await key.dataKey();
  const sealed = await dataKey.seal(offerCtr, fileOfferContext(plainSize, mime), manifest);
  return new OutgoingFile(key, dataKey, offerCtr, tid, plainSize, mime, sealed);
}

/**
 * A sealed file offer that opened. It keeps the data key the offer used: every chunk
 * of the transfer is under it, even if the sender rotates meanwhile.
 */
export class IncomingFile {
  constructor(fields) {
    Object.assign(this, fields); // name, sha256, tid, plainSize, mime, kid, offerCtr, key
  }

  /** Uint8Array plaintext of chunk `index`; E2EEError "decrypt_failed" if not that chunk. */
  async openChunk(index, data) {
    const bytes = toBytes(data);
    const { kid, ctr, length } = parseHeader(bytes);
    if (kid !== this.kid || ctr !== this.offerCtr + 1 + index) {
      throw new E2EEError("decrypt_failed", `chunk ${index} is not in its place`);
    }
    if (bytes.length < length + TAG_BYTES) throw new E2EEError("decrypt_failed", "ciphertext shorter than the tag");
    const context = fileChunkContext(this.tid, index);
    return this.key.open(ctr, bytes.subarray(0, length), context, bytes.subarray(length));
  }
}

/** Open the `sealed` field (or its bytes) of a relayed file offer from the keyring's owner. */
export async function openFileOffer(keyring, sealed, plainSize, mime, nowS) {
  const context = fileOfferContext(plainSize, mime);
  const { plaintext, key, ctr } = await keyring.openData(sealedBytes(sealed), context, nowS);
  let fields;
  try {
    fields = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(plaintext));
    fields.tid = fromBase64Url(fields.tid);
  } catch {
    throw new E2EEError("bad_sealed", "file offer does not hold a name, SHA-256 and transfer id");
  }
  const { name, sha256, tid } = fields;
  if (
    typeof name !== "string" || name.length === 0 || [...name].length > MAX_FILE_NAME_CHARS ||
    /[/\\]/.test(name) || name === "." || name === ".." ||
    typeof sha256 !== "string" || !/^[0-9a-f]{64}$/.test(sha256) || tid.length !== FILE_TID_BYTES
  ) {
    throw new E2EEError("bad_sealed", "file offer holds a bad name, SHA-256 or transfer id");
  }
  return new IncomingFile({ name, sha256, tid, plainSize, mime, kid: key.kid, offerCtr: ctr, key });
}

// ------------------------------------------------------------------ identities

/** Whether this browser's WebCrypto does X25519 (Chromium 133+, Firefox, Safari 17+). */
export async function x25519Supported() {
  try {
    await subtle().generateKey({ name: "X25519" }, false, ["deriveBits"]);
    return true;
  } catch {
    return false;
  }
}

// PKCS#8 PrivateKeyInfo for an X25519 key (RFC 8410): this prefix, then the 32 bytes.
const X25519_PKCS8_PREFIX = Uint8Array.of(
  0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x04, 0x22, 0x04, 0x20,
);

/** A participant's X25519 identity for one session; the private key never leaves. */
export class IdentityKeyPair {
  constructor(privateKey, publicKey) {
    this._privateKey = privateKey;
    this.publicKey = publicKey; // Uint8Array(32)
  }

  static async generate() {
    const pair = await subtle().generateKey({ name: "X25519" }, false, ["deriveBits"]);
    const publicKey = new Uint8Array(await subtle().exportKey("raw", pair.publicKey));
    return new IdentityKeyPair(pair.privateKey, publicKey);
  }

  /** From a 32-byte X25519 private key (RFC 7748); for tests and stored keys. */
  static async fromPrivateBytes(raw) {
    const pkcs8 = concat(X25519_PKCS8_PREFIX, toBytes(raw));
    const exportable = await subtle().importKey("pkcs8", pkcs8, { name: "X25519" }, true, ["deriveBits"]);
    const jwk = await subtle().exportKey("jwk", exportable);
    const privateKey = await subtle().importKey("pkcs8", pkcs8, { name: "X25519" }, false, ["deriveBits"]);
    return new IdentityKeyPair(privateKey, fromBase64Url(jwk.x));
  }

  /** X25519 with a peer's 32-byte public key; E2EEError "bad_public_key" if unusable. */
  async sharedSecret(peerPublic) {
    const peer = toBytes(peerPublic);
    if (peer.length !== PUBLIC_KEY_BYTES) {
      throw new E2EEError("bad_public_key", `public key must be ${PUBLIC_KEY_BYTES} bytes`);
    }
    let secret;
    try {
      const key = await subtle().importKey("raw", peer, { name: "X25519" }, true, []);
      secret = new Uint8Array(await subtle().deriveBits({ name: "X25519", public: key }, this._privateKey, 256));
    } catch {
      throw new E2EEError("bad_public_key", "public key gives no shared secret");
    }
    if (secret.every((byte) => byte === 0)) {
      throw new E2EEError("bad_public_key", "public key gives an all-zero shared secret");
    }
    return secret;
  }
}

function lengthPrefixed(identity) {
  const raw = encoder.encode(identity);
  if (raw.length > MAX_IDENTITY_BYTES) throw new RangeError("identity too long");
  return concat(uintBytes(raw.length, 2), raw);
}

/** The associated data binding a wrapped key to who sent it and for whom. */
export function wrapAad(senderIdentity, senderPublic, recipientIdentity, recipientPublic) {
  return concat(
    Uint8Array.of(WRAP_VERSION),
    lengthPrefixed(senderIdentity),
    toBytes(senderPublic),
    lengthPrefixed(recipientIdentity),
    toBytes(recipientPublic),
  );
}

async function wrapAesKey(shared, senderPublic, recipientPublic) {
  const info = concat(WRAP_LABEL, toBytes(senderPublic), toBytes(recipientPublic));
  const raw = await hkdfSha256(shared, info, KEY_BYTES);
  return subtle().importKey("raw", raw, "AES-GCM", false, ["encrypt", "decrypt"]);
}

/** Uint8Array blob `version | nonce | sealed(kid | baseKey)` for one recipient. */
export async function wrapSenderKey(sender, senderIdentity, recipientIdentity, recipientPublic, kid, baseKey) {
  checkUint(kid, "kid");
  const base = toBytes(baseKey);
  if (base.length !== BASE_KEY_BYTES) throw new RangeError(`base key must be ${BASE_KEY_BYTES} bytes`);
  const shared = await sender.sharedSecret(recipientPublic);
  const aesKey = await wrapAesKey(shared, sender.publicKey, recipientPublic);
  const nonce = globalThis.crypto.getRandomValues(new Uint8Array(NONCE_BYTES));
  const params = {
    name: "AES-GCM",
    iv: nonce,
    additionalData: wrapAad(senderIdentity, sender.publicKey, recipientIdentity, recipientPublic),
    tagLength: TAG_BYTES * 8,
  };
  const sealed = await subtle().encrypt(params, aesKey, concat(uintBytes(kid, 8), base));
  return concat(Uint8Array.of(WRAP_VERSION), nonce, new Uint8Array(sealed));
}

/** {kid, baseKey} from a blob; E2EEError "unwrap_failed" unless it was made for exactly us. */
export async function unwrapSenderKey(recipient, recipientIdentity, senderIdentity, senderPublic, blob) {
  const bytes = toBytes(blob);
  if (bytes.length !== WRAP_BLOB_BYTES || bytes[0] !== WRAP_VERSION) {
    throw new E2EEError("unwrap_failed", "not a version 1 wrapped key");
  }
  const shared = await recipient.sharedSecret(senderPublic);
  const aesKey = await wrapAesKey(shared, senderPublic, recipient.publicKey);
  const params = {
    name: "AES-GCM",
    iv: bytes.subarray(1, 1 + NONCE_BYTES),
    additionalData: wrapAad(senderIdentity, senderPublic, recipientIdentity, recipient.publicKey),
    tagLength: TAG_BYTES * 8,
  };
  let plaintext;
  try {
    plaintext = new Uint8Array(await subtle().decrypt(params, aesKey, bytes.subarray(1 + NONCE_BYTES)));
  } catch {
    throw new E2EEError("unwrap_failed", "wrapped key failed authentication");
  }
  const kid = new DataView(plaintext.buffer).getBigUint64(0);
  if (kid > BigInt(Number.MAX_SAFE_INTEGER)) throw new E2EEError("unwrap_failed", "kid beyond 2^53-1");
  return { kid: Number(kid), baseKey: plaintext.slice(8) };
}

// ------------------------------------------------------------------ safety numbers

function compareBytes(a, b) {
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    if (a[i] !== b[i]) return a[i] - b[i];
  }
  return a.length - b.length;
}

/** "12345 67890 ..." : 60 digits in 12 groups of 5 for two identity keys, either order. */
export async function safetyNumber(publicA, publicB) {
  const a = toBytes(publicA);
  const b = toBytes(publicB);
  if (a.length !== PUBLIC_KEY_BYTES || b.length !== PUBLIC_KEY_BYTES) {
    throw new E2EEError("bad_public_key", `public keys must be ${PUBLIC_KEY_BYTES} bytes`);
  }
  const [low, high] = compareBytes(a, b) <= 0 ? [a, b] : [b, a];
  const digest = new Uint8Array(await subtle().digest("SHA-512", concat(SAFETY_NUMBER_LABEL, low, high)));
  const groups = [];
  for (let group = 0; group < SAFETY_NUMBER_GROUPS; group++) {
    const at = group * 5;
    const value = digest[at] * TWO_32 + new DataView(digest.buffer).getUint32(at + 1);
    groups.push(String(value % 100000).padStart(5, "0"));
  }
  return groups.join(" ");
}

// ------------------------------------------------------------------ signaling helpers

/** Unpadded base64url (RFC 4648 section 5), the encoding in every e2ee_* message. */
export function toBase64Url(data) {
  const bytes = toBytes(data);
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}

/** Bytes of unpadded base64url text; E2EEError "e2ee_error" if it is not that. */
export function fromBase64Url(text) {
  if (typeof text !== "string" || !/^[A-Za-z0-9_-]*$/.test(text) || text.length % 4 === 1) {
    throw new E2EEError("e2ee_error", "not base64url");
  }
  const padded = text.replaceAll("-", "+").replaceAll("_", "/") + "=".repeat((4 - (text.length % 4)) % 4);
  const binary = atob(padded);
  const bytes = Uint8Array.from(binary, (char) => char.charCodeAt(0));
  if (toBase64Url(bytes) !== text) throw new E2EEError("e2ee_error", "not canonical base64url");
  return bytes;
}

/** {"type":"e2ee_hello","public_key":...}, to the room, or to one identity. */
export function helloMessage(publicKey, to = undefined) {
  const message = { type: "e2ee_hello", public_key: toBase64Url(publicKey) };
  if (to !== undefined) message.to = to;
  return message;
}

/** {"type":"e2ee_key","to":identity,"blob":...} for one recipient. */
export function keyMessage(to, blob) {
  return { type: "e2ee_key", to, blob: toBase64Url(blob) };
}
