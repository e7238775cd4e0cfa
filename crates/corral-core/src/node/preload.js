// corral's Node adapter, loaded into each Node worker with NODE_OPTIONS=--require.
// It makes unmodified apps serve on the sockets corral owns, talk to corral over the
// IPC channel (process.send), send heartbeats, and drain without failing a request.
// Supported and tested in CI: Node 22, 24 and 26, and the machine's own (20); it uses
// only APIs present since Node 18.2.
'use strict';

(function corral() {
  const env = process.env;
  // corral's own messages (CORRAL_*) go to this adapter only: an app's
  // process.on('message') (PM2's 'shutdown' handler, a logger) hears its own.
  const corralListeners = [];
  const onCorral = (listener) => corralListeners.push(listener);
  const realEmit = process.emit;
  process.emit = function (event, msg) {
    if (event === 'message' && msg && typeof msg.cmd === 'string' && msg.cmd.startsWith('CORRAL_')) {
      const rest = Array.prototype.slice.call(arguments, 1);
      for (const listener of corralListeners) listener.apply(process, rest);
      return corralListeners.length > 0;
    }
    return realEmit.apply(this, arguments);
  };
  // Node holds IPC messages back while the process has no 'message' listener; corral's
  // own listeners are not on the emitter, so this one (that does nothing) lets them in.
  process.on('message', () => {});
  // Direct: corral started this very process (`node app.js`). Wrapped: corral started a
  // wrapper (`npm start`, `yarn`, `sh -c '...'`) and this is some node process under it;
  // the one that listens on corral's port becomes the app, the others stay as they are.
  const wrapped = env.CORRAL_NODE_WRAPPED === '1';
  const direct = !wrapped && env.LISTEN_PID === String(process.pid);
  if ((!direct && !wrapped) || global.__corralAdapter) return;
  global.__corralAdapter = true;

  const net = require('net');
  const { monitorEventLoopDelay } = require('perf_hooks');

  // Corral's listeners: "127.0.0.1:3000=3,[::1]:3000=4,*:8080=5,/run/app.sock=6"
  // (host:port or a unix path, then the inherited fd; `*` is every address).
  const owned = [];
  for (const pair of (env.CORRAL_NODE_LISTENERS || '').split(',')) {
    const at = pair.lastIndexOf('=');
    if (at <= 0) continue;
    const key = pair.slice(0, at);
    const fd = Number(pair.slice(at + 1));
    const colon = key.lastIndexOf(':');
    if (key.startsWith('/') || colon < 0) {
      owned.push({ path: key, fd });
    } else {
      const host = key.slice(0, colon).replace(/^\[|\]$/g, '');
      owned.push({ host, port: Number(key.slice(colon + 1)), fd });
    }
  }
  const waitReady = env.CORRAL_WAIT_READY === '1';
  // Connections handed over by corral (round-robin, least-loaded, sticky) instead of
  // accepted from the shared socket.
  const dispatch = env.CORRAL_NODE_DISPATCH === '1';
  // Reuseport mode: the worker accepts from its slot's socket, and takes over its
  // channel what corral finds queued on the socket of a slot with no worker.
  const takesHanded = dispatch || (env.CORRAL_NODE_TAKES === '1' && direct);
  // Cluster mode: listen(port) on a port corral has no listener for asks corral to bind
  // it, once for every worker (Node's cluster primary does the same).
  const bindOnRequest = env.CORRAL_NODE_BIND === '1' && direct;
  const graceMs = Number(env.CORRAL_IDLE_GRACE_MS || 1000);
  const killTimeoutMs = Number(env.CORRAL_KILL_TIMEOUT_MS || 0);
  const slot = Number(env.CORRAL_WORKER_ID || 0);
  const channelFd = Number(env.CORRAL_CHANNEL_FD);
  // Once this process is the app, its children must not take over too. LISTEN_* stay:
  // apps that speak socket activation themselves still find them (and children ignore
  // them, since LISTEN_PID is not theirs).
  function forgetEnv() {
    for (const name of ['CORRAL_NODE_LISTENERS', 'CORRAL_WAIT_READY', 'CORRAL_NODE_DISPATCH',
      'CORRAL_KILL_TIMEOUT_MS', 'CORRAL_NODE_WRAPPED', 'CORRAL_NODE_BIND']) {
      delete env[name];
    }
  }

  // A wrapper that is node itself (npm, yarn, pnpm) would not pass corral's fds on: Node
  // starts children with only their stdio. Until this process is the app, every child
  // it starts gets them at the same numbers.
  const fs = require('fs');
  const isSocket = (fd) => { try { return fs.fstatSync(fd).isSocket(); } catch (_) { return false; } };
  if (wrapped) {
    const passOn = [...owned.map((l) => l.fd), channelFd].filter((fd) => fd > 2 && isSocket(fd));
    const { ChildProcess } = require('child_process');
    const originalSpawn = ChildProcess.prototype.spawn;
    ChildProcess.prototype.spawn = function spawn(options) {
      if (!active && options && passOn.length > 0) {
        let stdio = options.stdio === undefined ? 'pipe' : options.stdio;
        stdio = typeof stdio === 'string' ? [stdio, stdio, stdio] : [...stdio];
        for (const fd of passOn) {
          while (stdio.length < fd) stdio.push('ignore');
          if (stdio[fd] === undefined || stdio[fd] === null || stdio[fd] === 'ignore') stdio[fd] = fd;
        }
        options = { ...options, stdio };
      }
      return originalSpawn.call(this, options);
    };
  }

  // Direct: the channel is Node's IPC channel. Wrapped: the wrapper left NODE_CHANNEL_FD
  // alone (it would have taken the channel for itself), so the app writes JSON lines on
  // the inherited fd and gets process.send / 'message' as an IPC child would.
  let send = (msg) => {
    if (process.connected) {
      try { process.send(msg); } catch (_) { /* channel gone: corral is stopping us */ }
    }
  };
  let active = false;
  function activate() {
    if (active) return;
    active = true;
    forgetEnv();
    if (wrapped) openChannel();
    if (process.channel) process.channel.unref(); // the channel never keeps the app alive
    send({ cmd: 'CORRAL_HELLO', version: 1, dispatch: takesHanded, node: direct, heartbeat_ms: 1000 });
    startHeartbeats();
  }

  function openChannel() {
    if (!isSocket(channelFd)) return; // no channel: the app serves, corral can't hear it
    let channel;
    try {
      channel = new net.Socket({ fd: channelFd, readable: true, writable: true });
    } catch (_) {
      return; // no channel: the app still serves, corral only can't hear it
    }
    channel.unref();
    channel.on('error', () => {});
    send = (msg) => { if (!channel.destroyed) channel.write(`${JSON.stringify(msg)}\n`); };
    if (typeof process.send !== 'function') {
      process.send = (msg, ...rest) => {
        send(msg);
        const callback = rest.find((a) => typeof a === 'function');
        if (callback) process.nextTick(callback, null);
        return true;
      };
    }
    let buffered = '';
    channel.setEncoding('utf8');
    channel.on('data', (chunk) => {
      buffered += chunk;
      let at;
      while ((at = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, at);
        buffered = buffered.slice(at + 1);
        try { process.emit('message', JSON.parse(line)); } catch (_) { /* not JSON */ }
      }
    });
  }

  // Apps with their own cluster code run their worker branch, as under PM2's cluster
  // mode: corral is the primary. Node's own net and dgram modules read the same flags
  // to decide whether to ask a primary for their sockets; they must keep seeing a
  // primary (this process binds for itself), so the flags answer by who asks.
  const cluster = require('cluster');
  const { EventEmitter } = require('events');
  const worker = new EventEmitter();
  Object.assign(worker, {
    id: slot + 1,
    process,
    send: (...args) => process.send(...args),
    isConnected: () => process.connected,
    isDead: () => false,
    disconnect: () => {},
  });
  function askedByNode(getter) {
    const prepare = Error.prepareStackTrace;
    Error.prepareStackTrace = (_, frames) => frames;
    const holder = {};
    Error.captureStackTrace(holder, getter);
    const frames = holder.stack;
    Error.prepareStackTrace = prepare;
    const file = Array.isArray(frames) && frames[0] ? frames[0].getFileName() : '';
    return typeof file === 'string' && file.startsWith('node:');
  }
  const primaryFlag = function () { return askedByNode(primaryFlag); };
  const workerFlag = function () { return !askedByNode(workerFlag); };
  for (const [name, get] of [['isPrimary', primaryFlag], ['isMaster', primaryFlag],
    ['isWorker', workerFlag]]) {
    Object.defineProperty(cluster, name, { get, configurable: true, enumerable: true });
  }
  cluster.worker = worker;

  const servers = new Set();
  const sessions = new Set(); // HTTP/2 sessions, closed with GOAWAY on drain
  let draining = false;
  let readySent = false;
  let requests = 0;

  // Which inherited fds a listen() call means: listen(port[, host][, backlog][, cb]),
  // listen({ port, host } | { path }[, cb]) and listen(path[, cb]). A port without a
  // host means every corral listener on that port (IPv4 and IPv6), as Node's own
  // listen(port) means every address. A port corral listens on is corral's whatever host
  // the app names: `mapped` then holds the address the app asked for, which corral
  // reports once (binding it as well would only collide with corral's own socket).
  function ownedFds(args) {
    const first = args[0];
    let port;
    let host;
    let path;
    if (typeof first === 'number' || (typeof first === 'string' && /^\d+$/.test(first))) {
      port = Number(first);
      if (typeof args[1] === 'string') host = args[1];
    } else if (typeof first === 'string') {
      path = first;
    } else if (first && typeof first === 'object' && typeof first.fd === 'number') {
      // listen({ fd: 3 }): an app that speaks socket activation itself.
      return { fds: owned.some((l) => l.fd === first.fd) ? [first.fd] : [] };
    } else if (first && typeof first === 'object' && first.fd === undefined && !first._handle) {
      if (first.port !== undefined && first.port !== null) {
        port = Number(first.port);
        host = first.host;
      } else if (typeof first.path === 'string') {
        path = first.path;
      }
    }
    if (path !== undefined) return { fds: owned.filter((l) => l.path === path).map((l) => l.fd) };
    if (port === undefined || port === 0) return { fds: [] };
    const samePort = owned.filter((l) => l.port === port);
    if (!host) return { fds: samePort.map((l) => l.fd) };
    const wanted = host.replace(/^\[|\]$/g, '');
    const loopback = wanted === 'localhost' ? ['127.0.0.1', '::1'] : [wanted];
    const exact = samePort.filter((l) => loopback.includes(l.host));
    const wildcard = samePort.filter((l) => ['*', '0.0.0.0', '::'].includes(l.host));
    if (exact.length || wildcard.length) return { fds: (exact.length ? exact : wildcard).map((l) => l.fd) };
    const v6 = wanted.includes(':');
    return { fds: samePort.map((l) => l.fd), mapped: v6 ? `[${wanted}]:${port}` : `${wanted}:${port}` };
  }
  function wordAddress(fd) {
    const a = addressOf(fd);
    if (typeof a === 'string') return a;
    return a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
  }

  // The TCP port (and host) a listen() call asks for that corral should bind: a port
  // above 0 with no host or an IP host, not `exclusive` (Node's way to say "not shared").
  function askedPort(args) {
    const first = args[0];
    let port;
    let host;
    if (typeof first === 'number' || (typeof first === 'string' && /^\d+$/.test(first))) {
      port = Number(first);
      if (typeof args[1] === 'string') host = args[1];
    } else if (first && typeof first === 'object' && first.fd === undefined && !first._handle
      && first.path === undefined && !first.exclusive && first.port !== undefined) {
      port = Number(first.port);
      host = first.host;
    }
    if (!(port > 0 && port < 65536)) return null;
    if (host === 'localhost') host = '127.0.0.1';
    if (host !== undefined && net.isIP(host) === 0) return null; // a name: bind it ourselves
    return { port, host: host || null };
  }

  // Servers waiting for the listener corral binds for them, by "host|port".
  const asking = new Map();
  function listenAsked(server, asked, args) {
    const callback = args.find((a) => typeof a === 'function');
    activate();
    adopt(server);
    if (callback) server.once('listening', callback);
    const key = `${asked.host || ''}|${asked.port}`;
    asking.set(key, [...(asking.get(key) || []), server]);
    // The answer keeps the app alive, as a pending listen() does.
    if (process.channel) process.channel.ref();
    send({ cmd: 'CORRAL_BIND', port: asked.port, host: asked.host });
    return server;
  }
  const reasons = {
    EADDRINUSE: 'address already in use',
    EACCES: 'permission denied',
    EADDRNOTAVAIL: 'address not available',
  };
  onCorral((msg, handle) => {
    if (!msg || msg.cmd !== 'CORRAL_BOUND') return;
    const key = `${msg.host || ''}|${msg.port}`;
    const waiting = asking.get(key) || [];
    const server = waiting.shift();
    if (waiting.length === 0) asking.delete(key);
    if (asking.size === 0 && process.channel) process.channel.unref();
    if (!server) { if (handle && handle.close) handle.close(); return; }
    // Connections corral hands over for this port (reuseport mode) name it so.
    if (typeof msg.listener === 'number') byListener.set(msg.listener, server);
    if (msg.error || !handle) {
      // As Node reports a listen error: same message, code, errno, syscall, address, port.
      const e = msg.error || { code: 'EINVAL', errno: -22, message: 'no listener came' };
      const address = msg.host || '::';
      const err = new Error(`listen ${e.code}: ${reasons[e.code] || e.message} ${address}:${msg.port}`);
      Object.assign(err, { code: e.code, errno: e.errno, syscall: 'listen', address, port: msg.port });
      server.emit('error', err);
      return;
    }
    originalListen.call(server, handle);
  });

  const originalListen = net.Server.prototype.listen;
  const byListener = new Map(); // listener index -> the server handed connections go to
  const inUse = new Set(); // owned fds a server of this process accepts on
  net.Server.prototype.listen = function listen(...args) {
    const found = ownedFds(args);
    const fds = found.fds.filter(isSocket);
    if (fds.length === 0) {
      const asked = bindOnRequest && askedPort(args);
      return asked ? listenAsked(this, asked, args) : originalListen.apply(this, args);
    }
    const callback = args.find((a) => typeof a === 'function');
    activate();
    if (found.mapped) {
      send({ cmd: 'CORRAL_SERVED_ON', asked: found.mapped, on: fds.map(wordAddress) });
    }
    // A second server on the same socket (Fastify's `host: 'localhost'` listens on every
    // address localhost has, and corral may serve them all from one socket): the first
    // server already serves it, and epoll takes a socket once, so this one only looks
    // listening.
    const free = fds.filter((fd) => !inUse.has(fd));
    adopt(this);
    claim(this, free);
    if (dispatch || free.length === 0) {
      // corral accepts and hands connections over (or another server takes them): the
      // server must not accept on the shared socket. It listens on a private loopback
      // port nobody is told about (so it is a real, listening server to the app) and
      // reports corral's address.
      const ownedAddress = addressOf(fds[0]);
      this.address = () => ownedAddress;
      return originalListen.call(this, { port: 0, host: '127.0.0.1' }, callback);
    }
    // Further listeners of the same port (IPv6 beside IPv4) feed this server: they
    // accept, the app's server serves.
    for (const fd of free.slice(1)) {
      const feeder = net.createServer();
      feeder.on('connection', (socket) => this.emit('connection', socket));
      originalListen.call(feeder, { fd });
      this.once('close', () => originalClose.call(feeder));
      feeders.set(this, [...(feeders.get(this) || []), feeder]);
    }
    return originalListen.call(this, { fd: free[0] }, callback);
  };
  const feeders = new Map(); // server -> the servers accepting on its further listeners

  // `server` serves `fds` (accepted here, or handed over for them) until it closes.
  function claim(server, fds) {
    for (const fd of fds) {
      byListener.set(fd - 3, server);
      inUse.add(fd);
    }
    server.once('close', () => fds.forEach((fd) => inUse.delete(fd)));
  }

  function addressOf(fd) {
    const l = owned.find((o) => o.fd === fd);
    if (l.path !== undefined) return l.path;
    const v6 = l.host.includes(':') || l.host === '*';
    const address = l.host === '*' ? '::' : l.host;
    return { address, family: v6 ? 'IPv6' : 'IPv4', port: l.port };
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
  onCorral((msg, socket) => {
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

  // Upgraded connections (WebSockets) by socket: the request that upgraded it.
  const upgraded = new Map();
  function adopt(server) {
    servers.add(server);
    // Seen without a listener of corral's own: an 'upgrade' listener would make Node
    // keep upgrade requests the app has no handler for, instead of closing them.
    const emit = server.emit;
    server.emit = function (event, req, socket) {
      if (event === 'upgrade' && socket && !socket.destroyed) {
        upgraded.set(socket, req);
        socket.once('close', () => upgraded.delete(socket));
      }
      return emit.apply(this, arguments);
    };
    server.on('listening', () => {
      if (!waitReady && !readySent) {
        readySent = true;
        send({ cmd: 'CORRAL_READY' });
      }
    });
    // HTTP/2 has no `Connection: close`: its sessions get GOAWAY instead. Counting its
    // requests on 'stream' leaves an app without a 'request' handler without the
    // compatibility layer a 'request' listener would switch on.
    if (/^Http2(Secure)?Server$/.test(server.constructor && server.constructor.name)) {
      server.on('stream', () => { requests += 1; });
    } else {
      // http(s) servers: count requests, and end keep-alive connections politely once
      // draining (the client reconnects, to another worker).
      server.prependListener('request', (req, res) => {
        requests += 1;
        if (draining && req.httpVersionMajor < 2 && !res.headersSent) {
          res.setHeader('Connection', 'close');
        }
      });
    }
    server.on('session', (session) => {
      if (draining) { session.close(); return; }
      sessions.add(session);
      session.once('close', () => sessions.delete(session));
    });
  }

  // Heartbeats: event-loop delay (a busy loop stops them, and corral replaces the worker).
  function startHeartbeats() {
    const delay = monitorEventLoopDelay({ resolution: 20 });
    delay.enable();
    const beat = setInterval(() => {
      const lagMs = delay.max / 1e6;
      delay.reset();
      send({
        cmd: 'CORRAL_HEARTBEAT',
        rss: process.memoryUsage.rss(),
        lag_ms: lagMs,
        active: openConnections(),
        requests,
      });
    }, 1000);
    beat.unref();
  }

  function openConnections() {
    let active = handedActive;
    for (const s of servers) {
      active += s._connections || 0;
      for (const f of feeders.get(s) || []) active += f._connections || 0;
    }
    return active;
  }

  // The app's own SIGTERM/SIGINT listeners (the tutorials' server.close() handler,
  // NestJS shutdown hooks, Fastify's close) are held back until corral's drain is
  // done: by then no connection is left for their close() to cut.
  const SIGNALS = ['SIGTERM', 'SIGINT'];
  const held = new Map(SIGNALS.map((s) => [s, []]));
  const realOn = process.on.bind(process);
  function holding(method, once, prepend) {
    const original = process[method];
    process[method] = function (event, listener) {
      if (!held.has(event) || typeof listener !== 'function') {
        return original.apply(this, arguments);
      }
      const entry = { listener, once };
      if (prepend) held.get(event).unshift(entry); else held.get(event).push(entry);
      return this;
    };
  }
  holding('on', false, false);
  holding('addListener', false, false);
  holding('once', true, false);
  holding('prependListener', false, true);
  holding('prependOnceListener', true, true);
  for (const method of ['removeListener', 'off']) {
    const original = process[method];
    process[method] = function (event, listener) {
      if (!held.has(event)) return original.apply(this, arguments);
      const list = held.get(event);
      const at = list.findIndex((e) => e.listener === listener || e.listener.listener === listener);
      if (at >= 0) list.splice(at, 1);
      return this;
    };
  }
  const originalCount = process.listenerCount;
  process.listenerCount = function (event) {
    if (held.has(event)) return held.get(event).length;
    return originalCount.apply(this, arguments);
  };
  const originalListeners = process.listeners;
  process.listeners = function (event) {
    if (held.has(event)) return held.get(event).map((e) => e.listener);
    return originalListeners.apply(this, arguments);
  };

  // A server corral already closed answers the app's own close() as done.
  const originalClose = net.Server.prototype.close;
  net.Server.prototype.close = function close(callback) {
    if (this.__corralClosed) {
      if (typeof callback === 'function') process.nextTick(callback);
      return this;
    }
    return originalClose.apply(this, arguments);
  };

  // Drain: stop accepting, GOAWAY to HTTP/2 sessions, `Connection: close` on the next
  // HTTP/1 response of each kept-alive connection, close connections that stay idle for
  // the grace period; then hand the signal to the app's own listeners, or exit.
  let openServers = 0;
  let drainSignal = null;
  let drained = false;
  function drain(signal) {
    if (draining) return;
    draining = true;
    drainSignal = signal;
    // WebSocket (and SSE) code closes its long-lived connections here, e.g.
    // process.on('corral:drain', () => wss.clients.forEach((ws) => ws.close(1001)));
    process.emit('corral:drain');
    // What the app's own drain code left open gets a proper WebSocket close after the
    // grace period, so clients reconnect (to another worker) instead of being cut at
    // the kill timeout with 1006.
    setTimeout(goAwayUpgraded, graceMs).unref();
    for (const session of sessions) session.close();
    for (const server of servers) {
      // net.Server's close: stop listening only. http.Server#close (Node >= 19) would
      // also cut idle keep-alive connections at once, racing their clients' next request.
      // Its callback comes once the connections it accepted have closed.
      for (const s of [server, ...(feeders.get(server) || [])]) {
        openServers += 1;
        originalClose.call(s, () => {
          openServers -= 1;
          maybeFinish();
        });
      }
      server.__corralClosed = true;
      setTimeout(() => {
        if (typeof server.closeIdleConnections === 'function') server.closeIdleConnections();
      }, graceMs).unref();
    }
    if (killTimeoutMs > 0) {
      // Said just before corral's SIGKILL, so the log tells what was cut.
      setTimeout(() => {
        const open = openConnections();
        if (open > 0) {
          console.error(`[corral] worker ${slot} (pid ${process.pid}): ${open} connections ` +
            `(WebSockets, SSE or slow requests) still open after ${killTimeoutMs} ms of ` +
            "draining; they are cut now. Close them on process.on('corral:drain').");
        }
      }, Math.max(killTimeoutMs - 100, 0)).unref();
    }
    maybeFinish();
  }

  // A WebSocket `ws` serves (Socket.IO's and most Node servers' engine) closes with 1001
  // Going Away and its closing handshake; one of another library gets the close frame
  // written whole (a frame is written in one go, so it can't split another) and the
  // end of the connection. Other upgraded protocols are left to the kill timeout.
  const GOING_AWAY = Buffer.from([0x88, 0x02, 0x03, 0xe9]);
  function goAwayUpgraded() {
    for (const [socket, req] of upgraded) {
      if (socket.destroyed) continue;
      const key = Object.getOwnPropertySymbols(socket).find((s) => s.description === 'websocket');
      const ws = key && socket[key];
      if (ws && typeof ws.close === 'function') {
        if (ws.readyState === 1) ws.close(1001, 'server restarting');
      } else if (String((req && req.headers && req.headers.upgrade) || '').toLowerCase() === 'websocket') {
        socket.end(GOING_AWAY);
      }
    }
  }

  // Done when every server stopped and every connection it had (accepted or handed
  // over; net.Server doesn't count the latter) has closed.
  function maybeFinish() {
    if (!draining || drained || openServers > 0 || handedActive > 0) return;
    drained = true;
    deliver(drainSignal);
  }

  // After the drain: the app's own listeners for the signal run now; without any, exit.
  function deliver(signal) {
    const listeners = signal ? held.get(signal) : [];
    if (!listeners || listeners.length === 0) {
      process.exit(0);
      return;
    }
    for (const entry of [...listeners]) {
      if (entry.once) listeners.splice(listeners.indexOf(entry), 1);
      entry.listener.call(process, signal);
    }
  }

  function onSignal(signal) {
    if (!draining) drain(signal);
    else if (drained) deliver(signal); // again (NestJS re-raises it after its hooks)
  }
  for (const signal of SIGNALS) realOn(signal, () => onSignal(signal));
  if (direct) activate();
  onCorral((msg) => {
    if (msg && msg.cmd === 'CORRAL_SHUTDOWN') drain(null);
  });
})();
