// SHA-256 for millions of small messages, without an allocation per message: the whole-draw check
// hashes every leaf, every tree node and every score. WebCrypto's digest is asynchronous (one
// promise per call, measured ~10x slower here than this for 70-byte messages); @noble/hashes'
// one-shot sha256() builds a hasher object per call. This runs noble's SHA-256 compression
// function (vendor/noble-hashes) over a buffer the caller fills in place and pads here, and writes
// the digest where the caller says. Also the RFC 6962 tree root, kept as a stack of subtree roots.

import { _SHA256 } from "./vendor/noble-hashes-2.4.0/sha2.js";

// FIPS 180-4 section 5.3.3: the initial hash value.
const IV = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];
const core = new _SHA256();

// A reusable message buffer: write the message into `bytes` from offset 0, then digestInto.
export class Sha256Buffer {
  constructor(maxMessage) {
    this.bytes = new Uint8Array(Math.ceil((maxMessage + 9) / 64) * 64);
    this.view = new DataView(this.bytes.buffer);
    this.maxMessage = this.bytes.length - 9;
  }

  // SHA-256 of bytes[0, length) into out[offset, offset + 32), out given as a DataView.
  digestInto(length, outView, offset) {
    const bytes = this.bytes;
    const blocks = (length + 72) >>> 6;  // ceil((length + 1 + 8) / 64)
    const end = blocks << 6;
    bytes[length] = 0x80;
    bytes.fill(0, length + 1, end - 4);
    this.view.setUint32(end - 4, length * 8);  // messages here are far below 2^29 bytes
    core.set(IV[0], IV[1], IV[2], IV[3], IV[4], IV[5], IV[6], IV[7]);
    for (let at = 0; at < end; at += 64) core.process(this.view, at);
    outView.setUint32(offset, core.A);
    outView.setUint32(offset + 4, core.B);
    outView.setUint32(offset + 8, core.C);
    outView.setUint32(offset + 12, core.D);
    outView.setUint32(offset + 16, core.E);
    outView.setUint32(offset + 20, core.F);
    outView.setUint32(offset + 24, core.G);
    outView.setUint32(offset + 28, core.H);
  }
}

const EMPTY_ROOT = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";  // SHA-256("")

// The RFC 6962 root of leaves added one at a time (docs/draw-spec.md section 4.1). After n leaves
// the stack holds the roots of the perfect subtrees that n's binary digits describe, largest
// first; the root folds them from the right: MTH(D[n]) = H(0x01 || MTH(D[0:k]) || MTH(D[k:n])).
export class MerkleRoot {
  constructor() {
    this.node = new Sha256Buffer(65);
    this.node.bytes[0] = 1;
    this.stack = new Uint8Array(64 * 32);  // one subtree per bit of a 64-bit count
    this.stackView = new DataView(this.stack.buffer);
    this.depth = 0;
    this.count = 0;
  }

  // Add the leaf hash held in bytes[offset, offset + 32).
  addHash(bytes, offset) {
    this.stack.set(bytes.subarray(offset, offset + 32), this.depth * 32);
    this.depth += 1;
    this.count += 1;
    for (let n = this.count; n % 2 === 0; n /= 2) this.mergeTop();
  }

  // The top two subtrees become one: H(0x01 || left || right), in the left one's place.
  mergeTop() {
    const at = (this.depth - 2) * 32;
    this.node.bytes.set(this.stack.subarray(at, at + 64), 1);
    this.node.digestInto(65, this.stackView, at);
    this.depth -= 1;
  }

  root() {
    if (this.depth === 0) return hexToRoot(EMPTY_ROOT);
    const saved = { stack: this.stack.slice(), depth: this.depth };
    while (this.depth > 1) this.mergeTop();
    const root = this.stack.slice(0, 32);
    this.stack = saved.stack;
    this.stackView = new DataView(this.stack.buffer);
    this.depth = saved.depth;
    return root;
  }
}

function hexToRoot(hex) {
  return Uint8Array.from(hex.match(/../g), (h) => parseInt(h, 16));
}
