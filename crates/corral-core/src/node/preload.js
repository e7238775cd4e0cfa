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
  const graceMs = Number(env.CORRAL_IDLE_GRACE_MS || 1000);
  // LISTEN_* stay: apps that speak socket activation themselves still find them (and
  // children ignore them, since LISTEN_PID is not theirs).
  for (const name of ['CORRAL_NODE_LISTENERS', 'CORRAL_WAIT_READY']) delete env[name];

  const send = (msg) => {
    if (process.connected) {
      try { process.send(msg); } catch (_) { /* channel gone: corral is stopping us */ }
    }
  };
  if (process.channel) process.channel.unref(); // the channel never keeps the app alive

  send({ cmd: 'CORRAL_HELLO', version: 1, dispatch: false, heartbeat_ms: 1000 });

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
  net.Server.prototype.listen = function listen(...args) {
    const fd = ownedFd(args);
    if (fd === undefined) return originalListen.apply(this, args);
    const callback = args.find((a) => typeof a === 'function');
    adopt(this);
    return originalListen.call(this, { fd }, callback);
  };

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
    let active = 0;
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
  function drain(signal) {
    if (draining) return;
    draining = true;
    let open = 0;
    for (const server of servers) {
      // net.Server's close: stop listening only. http.Server#close (Node >= 19) would
      // also cut idle keep-alive connections at once, racing their clients' next request.
      open += 1;
      net.Server.prototype.close.call(server, () => {
        open -= 1;
        if (open === 0) finish(signal);
      });
      setTimeout(() => {
        if (typeof server.closeIdleConnections === 'function') server.closeIdleConnections();
      }, graceMs).unref();
    }
    if (open === 0) finish(signal);
  }

  function finish(signal) {
    // The app's own handler (if any) decides when to exit; otherwise we do.
    const theirs = signal ? process.listenerCount(signal) - 1 : 0;
    if (theirs <= 0) process.exit(0);
  }

  process.on('SIGTERM', () => drain('SIGTERM'));
  process.on('message', (msg) => {
    if (msg && msg.cmd === 'CORRAL_SHUTDOWN') drain(null);
  });
})();
