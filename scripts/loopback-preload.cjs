// Preloaded with `node -r` in front of the Agents Playground (scripts/run_playground.sh,
// tests/e2e/run.sh). The playground calls server.listen(port) with no host, which binds
// every interface; this makes any listen() that names no host bind 127.0.0.1 instead.
// A listen() given an explicit host, a path (unix socket) or a handle is left alone.
'use strict';
const net = require('net');
const LOOPBACK = process.env.HERALD_PLAYGROUND_HOST || '127.0.0.1';
const origListen = net.Server.prototype.listen;

net.Server.prototype.listen = function (...args) {
  const a0 = args[0];
  if (a0 !== null && typeof a0 === 'object' && !Array.isArray(a0)) {
    // listen(options[, cb]) — options.port without host/path/handle/fd
    if (a0.host === undefined && a0.path === undefined && a0.handle === undefined &&
        a0._handle === undefined && a0.fd === undefined) {
      args[0] = Object.assign({}, a0, { host: LOOPBACK });
    }
  } else if (typeof a0 === 'number' || (typeof a0 === 'string' && /^\d+$/.test(a0)) ||
             a0 === undefined || typeof a0 === 'function') {
    // listen([port][, host][, backlog][, cb]): insert host when absent
    if (typeof a0 === 'function' || a0 === undefined) {
      args = [0, LOOPBACK, ...args.slice(a0 === undefined ? 1 : 0)];
    } else if (typeof args[1] !== 'string') {
      args.splice(1, 0, LOOPBACK);
    }
  }
  return origListen.apply(this, args);
};
