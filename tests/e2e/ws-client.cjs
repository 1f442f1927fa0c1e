// Minimal RFC 6455 WebSocket client on node built-ins (node 18/20 have no WebSocket client
// without flags, and the Agents Playground bundles its `ws` inside a webpack bundle).
// Enough for the playground's stream routes: text frames, ping/pong, close; client frames masked.
'use strict';
const http = require('http');
const crypto = require('crypto');
const { EventEmitter } = require('events');

function connect(url, { timeoutMs = 5000 } = {}) {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const key = crypto.randomBytes(16).toString('base64');
    const req = http.request({
      host: u.hostname, port: u.port, path: u.pathname + u.search, method: 'GET',
      headers: { Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Version': '13', 'Sec-WebSocket-Key': key },
      timeout: timeoutMs,
    });
    req.on('timeout', () => req.destroy(new Error(`websocket connect timeout: ${url}`)));
    req.on('error', reject);
    req.on('response', (res) => reject(new Error(`websocket upgrade refused: HTTP ${res.statusCode}`)));
    req.on('upgrade', (res, socket, head) => {
      const want = crypto.createHash('sha1').update(key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64');
      if (res.headers['sec-websocket-accept'] !== want) { socket.destroy(); return reject(new Error('bad Sec-WebSocket-Accept')); }
      resolve(new Conn(socket, head));
    });
    req.end();
  });
}

class Conn extends EventEmitter {
  constructor(socket, head) {
    super();
    this.socket = socket; this.buf = Buffer.alloc(0); this.frags = []; this.closed = false; this.ending = false;
    socket.setNoDelay(true);
    socket.on('data', (d) => this._data(d));
    socket.on('close', () => { this.closed = true; this.emit('close'); });
    socket.on('error', (e) => { if (this.listenerCount('error')) this.emit('error', e); });
    if (head && head.length) this._data(head);
  }
  _data(d) {
    this.buf = Buffer.concat([this.buf, d]);
    for (;;) {
      if (this.buf.length < 2) return;
      const b0 = this.buf[0], b1 = this.buf[1];
      let len = b1 & 0x7f, off = 2;
      if (len === 126) { if (this.buf.length < 4) return; len = this.buf.readUInt16BE(2); off = 4; }
      else if (len === 127) { if (this.buf.length < 10) return; len = Number(this.buf.readBigUInt64BE(2)); off = 10; }
      const masked = (b1 & 0x80) !== 0;
      const mask = masked ? this.buf.subarray(off, off + 4) : null;
      if (masked) off += 4;
      if (this.buf.length < off + len) return;
      let payload = Buffer.from(this.buf.subarray(off, off + len));
      this.buf = this.buf.subarray(off + len);
      if (mask) for (let i = 0; i < payload.length; i++) payload[i] ^= mask[i & 3];
      const fin = (b0 & 0x80) !== 0, op = b0 & 0x0f;
      if (op === 0x8) { if (!this.ending) { this._send(0x8, Buffer.alloc(0)); this.ending = true; this.socket.end(); } return; }
      if (op === 0x9) { this._send(0xa, payload); continue; }
      if (op === 0xa) continue;
      this.frags.push(payload);
      if (fin) { const msg = Buffer.concat(this.frags); this.frags = []; this.emit('message', msg.toString('utf8')); }
    }
  }
  _send(op, payload) {
    if (this.closed || this.ending || !this.socket.writable) return;
    const len = payload.length;
    const hdr = len < 126 ? Buffer.alloc(2) : len < 65536 ? Buffer.alloc(4) : Buffer.alloc(10);
    hdr[0] = 0x80 | op;
    if (len < 126) hdr[1] = 0x80 | len;
    else if (len < 65536) { hdr[1] = 0x80 | 126; hdr.writeUInt16BE(len, 2); }
    else { hdr[1] = 0x80 | 127; hdr.writeBigUInt64BE(BigInt(len), 2); }
    const mask = crypto.randomBytes(4);
    const body = Buffer.from(payload);
    for (let i = 0; i < body.length; i++) body[i] ^= mask[i & 3];
    this.socket.write(Buffer.concat([hdr, mask, body]));
  }
  send(text) { this._send(0x1, Buffer.from(String(text), 'utf8')); }
  close() {
    if (this.closed || this.ending) return;
    this._send(0x8, Buffer.from([0x03, 0xe8]));
    this.ending = true;
    this.socket.end();
    setTimeout(() => this.socket.destroy(), 200).unref();
  }
}

module.exports = { connect };
