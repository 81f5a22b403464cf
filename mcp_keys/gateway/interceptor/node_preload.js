// mcp-keys run --proxy: route Node's http/https requests and fetch through the proxy.
// Node 20 honours neither the proxy variables nor NODE_USE_ENV_PROXY, so this file is
// loaded with NODE_OPTIONS=--require. Every path opens a CONNECT tunnel to the proxy
// (which refuses hosts that are not services), then TLS to the target inside it;
// NODE_EXTRA_CA_CERTS makes the proxy's CA trusted.
'use strict';
const http = require('http');
const https = require('https');
const net = require('net');
const tls = require('tls');

const proxyUrl = process.env.HTTPS_PROXY || process.env.https_proxy;
if (proxyUrl) {
  const proxy = new URL(proxyUrl);
  const plainRequest = http.request;
  const direct = new http.Agent();  // the tunnel's own CONNECT goes straight to the proxy

  const tunnel = (host, port, secure, servername, callback) => {
    const target = `${host.includes(':') ? `[${host}]` : host}:${port}`;
    const request = plainRequest({ host: proxy.hostname, port: proxy.port, method: 'CONNECT',
                                   path: target, headers: { host: target }, agent: direct });
    request.once('connect', (response, socket) => {
      if (response.statusCode !== 200) {
        socket.destroy();
        callback(new Error(`the mcp-keys proxy refused ${target} (${response.statusCode})`));
        return;
      }
      if (!secure) { callback(null, socket); return; }
      const options = { socket, host, ALPNProtocols: ['http/1.1'] };
      if (!net.isIP(host)) options.servername = servername || host;
      const secured = tls.connect(options);
      secured.once('secureConnect', () => callback(null, secured));
      secured.once('error', (error) => callback(error));
    });
    request.once('error', (error) => callback(error));
    request.end();
  };

  class HttpsTunnel extends https.Agent {
    createConnection(options, callback) {
      tunnel(options.host || options.hostname, options.port || 443, true, options.servername,
             callback);
    }
  }
  class HttpTunnel extends http.Agent {
    createConnection(options, callback) {
      tunnel(options.host || options.hostname, options.port || 80, false, null, callback);
    }
  }

  const route = (module, agent) => {
    module.globalAgent = agent;
    const original = module.request;
    module.request = function (...args) {
      let index = args.findIndex((a) => a && typeof a === 'object' && !(a instanceof URL));
      if (index === -1) {
        args.splice(typeof args[0] === 'function' ? 0 : 1, 0, {});
        index = typeof args[0] === 'object' ? 0 : 1;
      }
      if (args[index].agent === undefined) args[index].agent = agent;
      return original.apply(this, args);
    };
    module.get = function (...args) { const r = module.request(...args); r.end(); return r; };
  };
  route(https, new HttpsTunnel({ keepAlive: true }));
  route(http, new HttpTunnel({ keepAlive: true }));

  // fetch: Node's bundled undici keeps its dispatcher under this symbol; replace it with
  // an Agent of the same class whose connector tunnels through the proxy.
  const key = Symbol.for('undici.globalDispatcher.1');
  if (typeof globalThis.fetch === 'function' && !globalThis[key]) {
    globalThis.fetch('data:,').catch(() => {});  // loads undici, which sets its dispatcher
  }
  if (typeof globalThis.fetch === 'function' && globalThis[key]) {
    const Agent = globalThis[key].constructor;
    globalThis[key] = new Agent({
      connect: (options, callback) => tunnel(options.hostname, options.port ||
        (options.protocol === 'https:' ? 443 : 80), options.protocol === 'https:',
        options.servername, callback),
    });
  }
}
