// sdk_echo_bot.js — the Bot Framework SDK v4 (botbuilder-js) peer for `make bench`: the same echo bot as
// echo_bot.lua, the way the SDK samples write it (CloudAdapter + ActivityHandler), auth OFF (no app id),
// served by Node's own http module (no restify/express: one less layer, which only favours the SDK).
//   node sdk_echo_bot.js PORT        (PORT 0 picks a free one; prints "listening on http://127.0.0.1:PORT")
// NODE_PATH must reach the botbuilder install (tests/bench/run.sh sets it to build/bench/node_modules).
'use strict';
const http = require('http');
const { ActivityHandler, CloudAdapter, ConfigurationBotFrameworkAuthentication } = require('botbuilder');

// No MicrosoftAppId / password: inbound JWT check off, no outbound token (the SDK's "auth disabled").
const auth = new ConfigurationBotFrameworkAuthentication({});
const adapter = new CloudAdapter(auth);
adapter.onTurnError = async (context, error) => {
  console.error(`onTurnError: ${error && error.stack || error}`);
};

class EchoBot extends ActivityHandler {
  constructor() {
    super();
    this.onMessage(async (context, next) => {
      await context.sendActivity(`echo: ${context.activity.text}`);
      await next();
    });
  }
}
const bot = new EchoBot();

// The restify/express-shaped response CloudAdapter.process wants (status/header/send/end).
function wrap(res) {
  let body;
  return {
    status(code) { res.statusCode = code; return this; },
    header(name, value) { res.setHeader(name, value); return this; },
    send(b) { body = typeof b === 'string' || Buffer.isBuffer(b) ? b : JSON.stringify(b);
              if (typeof b === 'object' && !Buffer.isBuffer(b)) res.setHeader('Content-Type', 'application/json');
              return this; },
    end() { res.end(body); },
  };
}

const server = http.createServer((req, res) => {
  if (req.method === 'GET' && req.url === '/healthz') { res.end('{"status":"ok"}'); return; }
  if (req.url !== '/api/messages') { res.statusCode = 404; res.end(); return; }
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    try {
      req.body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch (e) {
      res.statusCode = 400; res.end('{"error":"bad json"}'); return;
    }
    adapter.process(req, wrap(res), (context) => bot.run(context)).catch((err) => {
      console.error(`process: ${err && err.stack || err}`);
      if (!res.headersSent) { res.statusCode = 500; res.end(); }
    });
  });
});
server.keepAliveTimeout = 120000;
server.listen(Number(process.argv[2] || 3978), '127.0.0.1', () => {
  console.log(`listening on http://127.0.0.1:${server.address().port}`);
});
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
