// corral's Node adapter, loaded into each Node worker with NODE_OPTIONS=--require.
// It makes unmodified apps serve on the sockets corral owns, talk to corral over the
// IPC channel (process.send), send heartbeats, and drain without failing a request.
// Supported and tested: Node 20 (uses only APIs present since Node 18.2).
'use strict';

(function corral() {
  const env = process.env;
  // Only the process corral started (not npm, not a child of the app) takes over.
  if (env.LISTEN_PID !== String(process.pid) || global.__corralAdapter) return;
  global.__corralAdapter = true;

  const net = require('net');
  const { monitorEventLoopDelay } = require('perf_hooks');

  // port or unix path -> inherited fd, e.g. "3000=3,/run/app.sock=4"
  const owned = new Map();
  for (const pair of (env.CORRAL_NODE_LISTENERS || '').split(',')) {
    const at = pair.lastIndexOf('=');
    if (at > 0) owned.set(pair.slice(0, at), Number(pair.slice(at + 1)));
  }
  const waitReady = env.CORRAL_WAIT_READY === '1';
  // Connections handed over by corral (round-robin, least-loaded, sticky) instead of
  // accepted from the shared socket.
  const dispatch = env.CORRAL_NODE_DISPATCH === '1';
  const graceMs = Number(env.CORRAL_IDLE_GRACE_MS || 1000);
  // LISTEN_* stay: apps that speak socket activation themselves still find them (and
  // children ignore them, since LISTEN_PID is not theirs).
  for (const name of ['CORRAL_NODE_LISTENERS', 'CORRAL_WAIT_READY', 'CORRAL_NODE_DISPATCH']) {
    delete env[name];
  }

  const send = (msg) => {
    if (process.connected) {
      try { process.send(msg); } catch (_) { /* channel gone: corral is stopping us */ }
    }
  };
  if (process.channel) process.channel.unref(); // the channel never keeps the app alive

  send({ cmd: 'CORRAL_HELLO', version: 1, dispatch, node: true, heartbeat_ms: 1000 });

  const servers = new Set();
  let draining = false;
  let readySent = false;
  let requests = 0;

  // Which inherited fd a listen() call means, if any: listen(port[, host][, backlog][, cb]),
  // listen({ port | path }[, cb]) and listen(path[, cb]).
  function ownedFd(args) {
    const first = args[0];
    let key;
    if (typeof first === 'number') key = String(first);
    else if (typeof first === 'string') key = /^\d+$/.test(first) ? String(Number(first)) : first;
    else if (first && typeof first === 'object' && first.fd === undefined && !first._handle) {
      if (first.port !== undefined && first.port !== null) key = String(Number(first.port));
      else if (typeof first.path === 'string') key = first.path;
    }
    return key === undefined ? undefined : owned.get(key);
  }

  const originalListen = net.Server.prototype.listen;
  const byListener = new Map(); // listener index -> server, in dispatch mode
  net.Server.prototype.listen = function listen(...args) {
    const fd = ownedFd(args);
    if (fd === undefined) return originalListen.apply(this, args);
    const callback = args.find((a) => typeof a === 'function');
    adopt(this);
    if (!dispatch) return originalListen.call(this, { fd }, callback);
    // corral accepts and hands connections over: the server must not accept on the
    // shared socket. It listens on a private loopback port nobody is told about (so it
    // is a real, listening server to the app) and reports corral's address.
    const index = fd - 3;
    byListener.set(index, this);
    const ownedAddress = ownedAddressOf(index);
    this.address = () => ownedAddress;
    return originalListen.call(this, { port: 0, host: '127.0.0.1' }, callback);
  };

  function ownedAddressOf(index) {
    const key = [...owned.entries()].find(([, fd]) => fd === index + 3)[0];
    return /^\d+$/.test(key) ? { address: '::', family: 'IPv6', port: Number(key) } : key;
  }

  // Handed-over connections: Node's IPC delivers each as a net.Socket with the message.
  let received = 0;
  let handedActive = 0;
  // Credit goes back at once when a connection arrives (corral waits for it); closed
  // connections are reported at most every 20ms. A pending late ack never holds up an
  // immediate one.
  let ackNow = false;
  let ackLater = null;
  function sendAck() {
    ackNow = false;
    if (ackLater) { clearTimeout(ackLater); ackLater = null; }
    send({ cmd: 'CORRAL_ACK', received, active: handedActive });
  }
  function ack(delayMs) {
    if (!delayMs) {
      if (!ackNow) { ackNow = true; setImmediate(sendAck); }
    } else if (!ackNow && !ackLater) {
      ackLater = setTimeout(sendAck, delayMs);
      ackLater.unref();
    }
  }
  process.on('message', (msg, socket) => {
    if (!msg || msg.cmd !== 'CORRAL_CONN') return;
    received += 1;
    ack(0);
    const server = byListener.get(msg.listener || 0);
    if (!socket) return; // closed by the client while in flight
    if (!server) { socket.destroy(); return; }
    handedActive += 1;
    socket.once('close', () => {
      handedActive -= 1;
      ack(20);
      maybeFinish();
    });
    server.emit('connection', socket);
  });

  function adopt(server) {
    servers.add(server);
    server.on('listening', () => {
      if (!waitReady && !readySent) {
        readySent = true;
        send({ cmd: 'CORRAL_READY' });
      }
    });
    // http(s) servers: count requests, and end keep-alive connections politely once
    // draining (the client reconnects, to another worker).
    server.prependListener('request', (req, res) => {
      requests += 1;
      if (draining && !res.headersSent) res.setHeader('Connection', 'close');
    });
  }

  // Heartbeats: event-loop delay (a busy loop stops them, and corral replaces the worker).
  const delay = monitorEventLoopDelay({ resolution: 20 });
  delay.enable();
  const beat = setInterval(() => {
    const lagMs = delay.max / 1e6;
    delay.reset();
    let active = handedActive;
    for (const s of servers) active += s._connections || 0;
    send({
      cmd: 'CORRAL_HEARTBEAT',
      rss: process.memoryUsage.rss(),
      lag_ms: lagMs,
      active,
      requests,
    });
  }, 1000);
  beat.unref();

  // Drain: stop accepting, finish in-flight requests, close connections that stay idle
  // for the grace period, then exit unless the app has its own handler for the signal.
  let openServers = 0;
  let drainSignal = null;
  function drain(signal) {
    if (draining) return;
    draining = true;
    drainSignal = signal;
    for (const server of servers) {
      // net.Server's close: stop listening only. http.Server#close (Node >= 19) would
      // also cut idle keep-alive connections at once, racing their clients' next request.
      openServers += 1;
      net.Server.prototype.close.call(server, () => {
        openServers -= 1;
        maybeFinish();
      });
      setTimeout(() => {
        if (typeof server.closeIdleConnections === 'function') server.closeIdleConnections();
      }, graceMs).unref();
    }
    maybeFinish();
  }

  // Done when every server stopped and every connection it had (accepted or handed
  // over; net.Server doesn't count the latter) has closed.
  function maybeFinish() {
    if (!draining || openServers > 0 || handedActive > 0) return;
    // The app's own handler (if any) decides when to exit; otherwise we do.
    const theirs = drainSignal ? process.listenerCount(drainSignal) - 1 : 0;
    if (theirs <= 0) process.exit(0);
  }

  process.on('SIGTERM', () => drain('SIGTERM'));
  process.on('message', (msg) => {
    if (msg && msg.cmd === 'CORRAL_SHUTDOWN') drain(null);
  });
})();
