// Test-only OpenID provider for linkgate's integration tests.
//
// NEVER use this outside tests: any login name is accepted with any password.
//
// Usage:
//   node provider.mjs <config.json>     serve; prints exactly one line `READY <issuer>` to stdout
//                                       once listening; exits when stdin closes, on SIGTERM/SIGINT
//   node provider.mjs --genkey [kid]    print a fresh RS256 key as JSON {"jwk", "pem", "public_pem"}
//
// Config JSON:
//   { "port": N, "issuer": "http://127.0.0.1:N", "name": "label",
//     "clients": [{ client_id, client_secret, redirect_uris, post_logout_redirect_uris,
//                   token_endpoint_auth_method, grant_types }],
//     "jwks": { "keys": [private JWKs] },                 (optional: an RS256 key is generated)
//     "ttl": { "AccessToken": s, "IdToken": s, "RefreshToken": s, ... },  (optional, seconds)
//     "accounts": { "alice": { "email", "name", "preferred_username", "groups", "email_verified" } },
//     "verbose": false,                                   (optional: log every request to stderr)
//     "rotate_refresh_tokens": false,                     (optional: every refresh spends its token)
//     "ims": false }                                      (optional: behave like Adobe IMS, below)
//
// With "ims": true the provider behaves the way Adobe IMS does where it differs from a stock
// OpenID provider: the discovery document (also served at /ims/.well-known/...) has no
// end_session_endpoint, and logout is IMS's own GET /ims/logout/v1?client_id&redirect_uri;
// authorization requests must carry comma-separated scopes (a space-separated list is
// refused with invalid_scope) and may ask for AdobeID; the token endpoint takes
// client_secret_post only (a client registered otherwise is registered with it, and HTTP Basic
// is refused with invalid_client); email_verified is the string "true"; sub looks like
// "0123ABCD...@AdobeID"; refresh tokens rotate; access and id tokens live 24 hours unless "ttl"
// says otherwise; there is no /session/end. Adobe's documented endpoint paths answer too
// (/ims/authorize/v2, /ims/token/v3, /ims/userinfo/v2, /ims/keys), while the discovery document
// names oidc-provider's own (/auth, /token, /me, /jwks): the two disagree, as a preset setting
// (preset_endpoints) must handle.
//
// Everything is served from 127.0.0.1 and nothing is ever fetched from elsewhere: the login,
// logout and error pages below replace oidc-provider's stock pages, which import a web font.
//
// Test-control endpoints (this script only):
//   GET  /__test/counts        JSON counters (token requests by grant_type, userinfo, ...)
//   POST /__test/reset         zero the counters
//   GET  /__test/private-jwks  the private JWKS in use (to restart with the same keys)
//   POST /__test/sign          body: JSON claims; answer: a compact JWS (RS256) signed with the
//                              provider's first signing key (for "account JWT" style tests)
//   POST /__test/misbehave     body: JSON switches, replacing the previous ones ({} = behave):
//     "jwks_status": N               /jwks answers status N
//     "userinfo": {claim: v|null}    /me answers with these claims changed (null removes one)
//     "id_token": {claim: v|null}    the id_token of a code exchange, changed and re-signed
//     "refresh_id_token": {...}      the id_token of a refresh, changed and re-signed
//     "authorization_iss": s|null    the `iss` of authorization responses: replaced, or removed
//     "discovery": {key: v}          discovery document entries, replaced
//     "token_status": N              POST /token answers status N (a JSON OAuth error for 400,
//                                    else an HTML page); counted as *_refused_on_purpose
//     "token_delay_ms": N            POST /token answers N ms late

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';

function generateKey(kid) {
  // Node 20 can deadlock when the KeyObject returned by generateKeyPairSync is exported as a JWK:
  // a garbage collection during the export destroys the key-generation job, which takes the
  // mutex the export holds (seen as a rare hang before READY). So the key is generated straight
  // to PEM and the JWK exported from a separate KeyObject.
  const { privateKey: pem, publicKey: publicPem } = crypto.generateKeyPairSync('rsa', {
    modulusLength: 2048,
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
    publicKeyEncoding: { type: 'spki', format: 'pem' },
  });
  const jwk = {
    ...crypto.createPrivateKey(pem).export({ format: 'jwk' }),
    kid: kid || crypto.randomBytes(9).toString('base64url'),
    alg: 'RS256',
    use: 'sig',
  };
  return { jwk, pem, public_pem: publicPem };
}

if (process.argv[2] === '--genkey') {
  process.stdout.write(`${JSON.stringify(generateKey(process.argv[3]))}\n`);
  process.exit(0);
}

if (!process.argv[2]) {
  process.stderr.write('usage: node provider.mjs <config.json> | --genkey [kid]\n');
  process.exit(2);
}

// stdout carries exactly one line, `READY <issuer>`: everything else goes to stderr, including
// oidc-provider's console.info NOTICEs. Two WARNINGs known to be expected here are dropped unless
// verbose: "Unsupported runtime" (oidc-provider 9 wants Node 22+, and works on Node 20) and the
// in-memory adapter one (this provider is meant to forget everything on restart).
const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const verbose = Boolean(config.verbose);
const toStderr = (...args) => process.stderr.write(`${args.map(String).join(' ')}\n`);
console.log = toStderr;
console.info = toStderr;
console.debug = toStderr;
console.warn = (...args) => {
  const text = args.map(String).join(' ');
  if (!verbose && /Unsupported runtime|in-memory adapter/.test(text)) return;
  toStderr(text);
};

// Imported here so that --genkey works without node_modules.
const { default: Provider } = await import('oidc-provider');

const label = String(config.name || 'oidc');
const cookieSuffix = label.replace(/[^A-Za-z0-9]/g, '_');
const issuer = config.issuer || `http://127.0.0.1:${config.port}`;
const accounts = config.accounts || {};
const ims = Boolean(config.ims);
const rotate = ims || Boolean(config.rotate_refresh_tokens);
// IMS-style subjects: an opaque id "@AdobeID", mapped back to the login name for the claims.
const imsSubs = new Map();
function imsSub(login) {
  const sub = `${crypto.createHash('sha256').update(login).digest('hex').slice(0, 24).toUpperCase()}@AdobeID`;
  imsSubs.set(sub, login);
  return sub;
}

// ---- shutdown: stdin closed (parent died), SIGTERM, SIGINT --------------------------------
function shutdown(why) {
  if (verbose) process.stderr.write(`shutting down: ${why}\n`);
  process.exit(0);
}
process.stdin.on('end', () => shutdown('stdin closed'));
process.stdin.on('close', () => shutdown('stdin closed'));
process.stdin.on('error', () => shutdown('stdin error'));
process.stdin.resume();
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));

// ---- keys -----------------------------------------------------------------------------------
const jwks = config.jwks?.keys?.length ? config.jwks : { keys: [generateKey().jwk] };

// ---- counters -------------------------------------------------------------------------------
function freshCounts() {
  return {
    authorization_code: 0, // POST /token with grant_type=authorization_code (any outcome)
    refresh_token: 0, // POST /token with grant_type=refresh_token (any outcome)
    other_grant: 0, // POST /token with any other grant_type
    token_success: 0, // grant.success events
    token_error: 0, // grant.error events
    token_received: 0, // POST /token requests received (counted on arrival, before any delay)
    authorize: 0, // GET|POST /auth (first leg, not the /auth/:uid resumes)
    login_forms_posted: 0, // POST /interaction/:uid/login
    userinfo: 0, // GET|POST /me
    revocation: 0, // POST /token/revocation
    end_session: 0, // GET|POST /session/end (first leg)
    jwks: 0, // GET /jwks
    ims_logout: 0, // GET /ims/logout/v1 (ims)
    refresh_refused_on_purpose: 0, // POST /token (refresh_token) answered by token_status
    code_refused_on_purpose: 0, // POST /token (other grants) answered by token_status
  };
}
let counts = freshCounts();

// ---- accounts -------------------------------------------------------------------------------
function accountClaims(id) {
  const login = imsSubs.get(id) || id;
  const a = accounts[login] || {};
  const verified = a.email_verified ?? true;
  return {
    sub: id,
    email: a.email || (login.includes('@') ? login : `${login}@example.test`),
    email_verified: ims ? String(verified) : verified,
    name: a.name || login,
    preferred_username: a.preferred_username || login,
    groups: a.groups || [],
  };
}

// ---- pages (no external resources) ------------------------------------------------------------
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({
  '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
}[c]));

function page(title, body) {
  return `<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
<title>${esc(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font-family:sans-serif;margin:25px auto;width:320px}
input,button{display:block;width:100%;box-sizing:border-box;height:36px;margin:0 0 10px}
.provider{color:#666;font-size:12px}
</style>
</head>
<body>
<p class="provider">Test OpenID provider <strong>${esc(label)}</strong> (development only)</p>
<h1>${esc(title)}</h1>
${body}
</body>
</html>`;
}

function loginPage(uid, params, error) {
  const hint = params.login_hint ? ` value="${esc(params.login_hint)}"` : '';
  return page('Sign-in', `${error ? `<p id="error">${esc(error)}</p>` : ''}
<form id="login-form" autocomplete="off" action="/interaction/${esc(uid)}/login" method="post">
<input type="hidden" name="prompt" value="login">
<input id="login" required type="text" name="login" placeholder="Enter any login" autofocus${hint}>
<input id="password" required type="password" name="password" placeholder="and any password">
<button id="submit" type="submit">Sign-in</button>
</form>
<form id="abort-form" action="/interaction/${esc(uid)}/abort" method="post">
<button id="abort" type="submit">Cancel</button>
</form>`);
}

// ---- storage --------------------------------------------------------------------------------
// oidc-provider's own in-memory adapter is an LRU of 1,000 entries: past a few hundred signed-in
// users it evicts live grants and refresh tokens, and then refuses their refreshes
// (invalid_grant), which a test or a soak would blame on linkgate. This one keeps everything
// until it expires (swept once a minute).
const stored = new Map(); // "Model:id" -> { payload, expiresAt (ms, 0: never) }
const grantMembers = new Map(); // grantId -> Set of "Model:id"

function liveEntry(key) {
  const e = stored.get(key);
  if (!e) return undefined;
  if (e.expiresAt && e.expiresAt <= Date.now()) {
    stored.delete(key);
    return undefined;
  }
  return e.payload;
}

setInterval(() => {
  const now = Date.now();
  for (const [key, e] of stored) {
    if (e.expiresAt && e.expiresAt <= now) stored.delete(key);
  }
}, 60_000).unref();

const GRANTABLE = new Set([
  'AccessToken', 'AuthorizationCode', 'RefreshToken', 'DeviceCode',
  'BackchannelAuthenticationRequest', 'PreAuthorizedCode',
]);

class MapAdapter {
  constructor(model) { this.model = model; }

  key(id) { return `${this.model}:${id}`; }

  async upsert(id, payload, expiresIn) {
    const expiresAt = expiresIn ? Date.now() + expiresIn * 1000 : 0;
    const key = this.key(id);
    stored.set(key, { payload, expiresAt });
    // As oidc-provider's own memory adapter: only token-like models belong to a grant (an
    // Interaction carries a grantId too, and must survive the revocation of an old grant
    // when another account signs in), and only a Session is found by its uid.
    if (GRANTABLE.has(this.model) && payload.grantId) {
      if (!grantMembers.has(payload.grantId)) grantMembers.set(payload.grantId, new Set());
      grantMembers.get(payload.grantId).add(key);
    }
    if (this.model === 'Session' && payload.uid) {
      stored.set(`sessionUid:${payload.uid}`, { payload: id, expiresAt });
    }
    if (payload.userCode) stored.set(`userCode:${payload.userCode}`, { payload: id, expiresAt });
  }

  async find(id) { return liveEntry(this.key(id)); }

  async findByUid(uid) {
    const id = liveEntry(`sessionUid:${uid}`);
    return id === undefined ? undefined : this.find(id);
  }

  async findByUserCode(userCode) {
    const id = liveEntry(`userCode:${userCode}`);
    return id === undefined ? undefined : this.find(id);
  }

  async consume(id) {
    const payload = liveEntry(this.key(id));
    if (payload) payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) { stored.delete(this.key(id)); }

  async revokeByGrantId(grantId) {
    for (const key of grantMembers.get(grantId) || []) stored.delete(key);
    grantMembers.delete(grantId);
  }
}

// ---- provider -------------------------------------------------------------------------------
// Numbers (seconds) for every TTL in use, so that oidc-provider does not print a NOTICE for each
// default TTL function; the values are oidc-provider's own defaults. config.ttl overrides them.
const DEFAULT_TTLS = {
  AccessToken: 60 * 60,
  AuthorizationCode: 60,
  IdToken: 60 * 60,
  RefreshToken: 14 * 24 * 60 * 60,
  Interaction: 60 * 60,
  Session: 14 * 24 * 60 * 60,
  Grant: 14 * 24 * 60 * 60,
};

function numberTtls(ttl) {
  // IMS issues 24-hour access tokens (and id_tokens).
  const out = { ...DEFAULT_TTLS, ...(ims ? { AccessToken: 24 * 60 * 60, IdToken: 24 * 60 * 60 } : {}) };
  for (const [k, v] of Object.entries(ttl || {})) {
    if (typeof v === 'number') out[k] = v;
  }
  return out;
}

const provider = new Provider(issuer, {
  adapter: MapAdapter,
  clients: (config.clients || []).map((c) => ({
    client_id: c.client_id,
    ...(c.client_secret ? { client_secret: c.client_secret } : {}),
    redirect_uris: c.redirect_uris || [],
    // IMS: no RP-initiated logout (its /ims/logout/v1 below reads the config's list), and
    // client_secret_post only.
    ...(ims ? {} : { post_logout_redirect_uris: c.post_logout_redirect_uris || [] }),
    token_endpoint_auth_method: ims ? 'client_secret_post' : (c.token_endpoint_auth_method || 'client_secret_basic'),
    grant_types: c.grant_types || ['authorization_code', 'refresh_token'],
    response_types: ['code'],
  })),
  jwks,
  cookies: {
    // Per-provider names: cookies do not isolate by port, and the tests run two providers on
    // 127.0.0.1 in one browser / cookie jar.
    names: {
      session: `_session_${cookieSuffix}`,
      interaction: `_interaction_${cookieSuffix}`,
      resume: `_interaction_resume_${cookieSuffix}`,
    },
    keys: [crypto.randomBytes(32).toString('base64url')],
  },
  responseTypes: ['code'],
  ...(ims ? { clientAuthMethods: ['client_secret_post'] } : {}),
  pkce: { required: () => true }, // 9.x only implements S256 (plain is refused)
  scopes: ['openid', 'offline_access', 'email', 'profile', 'groups', ...(ims ? ['AdobeID'] : [])],
  // Rotation on: every refresh spends its token. Off: oidc-provider's default (rotate public
  // clients' tokens and old ones), which for these confidential clients means never.
  ...(rotate ? { rotateRefreshToken: () => true } : {}),
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username', 'groups'],
    groups: ['groups'],
  },
  conformIdTokenClaims: false,
  ttl: numberTtls(config.ttl),
  async findAccount(_ctx, id) {
    // Any login name is an account: returning undefined here makes oidc-provider answer 500.
    return {
      accountId: id,
      async claims() { return accountClaims(id); },
    };
  },
  // No consent screen: the grant always covers what is asked for.
  async loadExistingGrant(ctx) {
    const { oidc } = ctx;
    const grantId = oidc.result?.consent?.grantId || oidc.session.grantIdFor(oidc.client.clientId);
    let grant = grantId ? await oidc.provider.Grant.find(grantId) : undefined;
    if (!grant) {
      grant = new oidc.provider.Grant({
        clientId: oidc.client.clientId,
        accountId: oidc.session.accountId,
      });
    }
    const scopes = [...(oidc.requestParamOIDCScopes || [])];
    if (scopes.length) grant.addOIDCScope(scopes.join(' '));
    const claims = [...(oidc.requestParamClaims || [])];
    if (claims.length) grant.addOIDCClaims(claims);
    await grant.save();
    return grant;
  },
  // Refresh tokens for every client allowed the grant, offline_access or not (the stock rule
  // wants offline_access, which oidc-provider drops unless prompt=consent is also sent).
  async issueRefreshToken(_ctx, client) {
    return client.grantTypeAllowed('refresh_token');
  },
  interactions: {
    url(_ctx, interaction) { return `/interaction/${interaction.uid}`; },
  },
  features: {
    devInteractions: { enabled: false }, // replaced by the login page below
    userinfo: { enabled: true },
    revocation: { enabled: true },
    rpInitiatedLogout: {
      // IMS has none: no end_session_endpoint in discovery, no /session/end.
      enabled: !ims,
      async logoutSource(ctx, form) {
        ctx.type = 'html';
        ctx.body = page('Sign out', `${form}
<button id="logout-yes" autofocus type="submit" form="op.logoutForm" value="yes" name="logout">Yes, sign me out</button>
<button id="logout-no" type="submit" form="op.logoutForm">No, stay signed in</button>`);
      },
      async postLogoutSuccessSource(ctx) {
        ctx.type = 'html';
        ctx.body = page('Signed out', '<p id="signed-out">You are signed out.</p>');
      },
    },
  },
  async renderError(ctx, out) {
    ctx.type = 'html';
    ctx.body = page('Error', `<pre id="error">${esc(JSON.stringify(out, null, 2))}</pre>`);
  },
});

provider.proxy = false;

provider.on('grant.success', () => { counts.token_success += 1; });
provider.on('grant.error', (_ctx, err) => {
  counts.token_error += 1;
  process.stderr.write(`grant.error: ${err?.message} ${err?.error_description || ''}${err?.cause ? ` (${err.cause.message || err.cause})` : ''}\n`);
});
provider.on('server_error', (_ctx, err) => { process.stderr.write(`server_error: ${err?.stack || err}\n`); });
for (const ev of ['authorization.error', 'end_session.error', 'userinfo.error', 'revocation.error']) {
  provider.on(ev, (_ctx, err) => {
    process.stderr.write(`${ev}: ${err?.message} ${err?.error_description || ''}\n`);
  });
}

function readBody(ctx) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    ctx.req.on('data', (c) => chunks.push(c));
    ctx.req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    ctx.req.on('error', reject);
  });
}

function b64url(v) {
  return Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');
}

function signJwt(claims) {
  const key = jwks.keys.find((k) => k.kty === 'RSA' && (!k.alg || k.alg === 'RS256'));
  if (!key) throw new Error('no RS256 key');
  const header = { alg: 'RS256', typ: 'JWT', kid: key.kid };
  const input = `${b64url(header)}.${b64url(claims)}`;
  const sig = crypto.sign('sha256', Buffer.from(input), crypto.createPrivateKey({ key, format: 'jwk' }));
  return `${input}.${sig.toString('base64url')}`;
}

// IMS: Adobe's documented paths, as aliases of oidc-provider's (which discovery names);
// rewritten first, so that counters and misbehaviour switches apply to both.
if (ims) {
  const documented = {
    '/ims/.well-known/openid-configuration': '/.well-known/openid-configuration',
    '/ims/authorize/v2': '/auth',
    '/ims/token/v3': '/token',
    '/ims/userinfo/v2': '/me',
    '/ims/keys': '/jwks',
  };
  provider.use(async (ctx, next) => {
    if (documented[ctx.path]) ctx.path = documented[ctx.path];
    return next();
  });
}

// Request log (verbose) and counters: the token request's grant_type is read from the parsed
// parameters after the route ran, whatever its outcome.
provider.use(async (ctx, next) => {
  const started = Date.now();
  try {
    await next();
  } finally {
    const path = ctx.path;
    if (path === '/token' && ctx.method === 'POST') {
      const gt = ctx.oidc?.params?.grant_type;
      if (gt === 'authorization_code') counts.authorization_code += 1;
      else if (gt === 'refresh_token') counts.refresh_token += 1;
      else counts.other_grant += 1;
    } else if (path === '/auth') {
      counts.authorize += 1;
    } else if (path === '/me') {
      counts.userinfo += 1;
    } else if (path === '/token/revocation') {
      counts.revocation += 1;
    } else if (path === '/session/end') {
      counts.end_session += 1;
    } else if (path === '/jwks') {
      counts.jwks += 1;
    }
    if (verbose) {
      process.stderr.write(`${ctx.method} ${ctx.url} -> ${ctx.status} ${ctx.response.get('location') ? `(${ctx.response.get('location')}) ` : ''}${Date.now() - started}ms\n`);
    }
  }
});

// Misbehaviour switches (POST /__test/misbehave), for tests of how linkgate treats a provider
// that lies or fails. Registered after the counters, so that a failing /jwks still counts.
let misbehave = {};

function patched(claims, patch) {
  const out = { ...claims };
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = v;
  }
  return out;
}

function patchJwt(token, patch) {
  const payload = JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8'));
  return signJwt(patched(payload, patch));
}

provider.use(async (ctx, next) => {
  if (ctx.path === '/jwks' && misbehave.jwks_status) {
    ctx.status = misbehave.jwks_status;
    ctx.body = { error: 'misbehaving on purpose' };
    return;
  }
  await next();
  if (ctx.path === '/me' && misbehave.userinfo && ctx.body && typeof ctx.body === 'object') {
    ctx.body = patched(ctx.body, misbehave.userinfo);
  }
  if (ctx.path === '/token' && ctx.method === 'POST' && ctx.body && ctx.body.id_token) {
    const grant = ctx.oidc?.params?.grant_type;
    const patch = grant === 'refresh_token' ? misbehave.refresh_id_token : misbehave.id_token;
    if (patch) ctx.body = { ...ctx.body, id_token: patchJwt(ctx.body.id_token, patch) };
  }
  if (ctx.path === '/.well-known/openid-configuration' && misbehave.discovery && ctx.body) {
    const doc = typeof ctx.body === 'string' ? JSON.parse(ctx.body) : ctx.body;
    ctx.body = { ...doc, ...misbehave.discovery };
  }
  const location = ctx.response.get('location');
  if ('authorization_iss' in misbehave && location && /[?&](code|error)=/.test(location)) {
    const url = new URL(location);
    if (misbehave.authorization_iss === null) url.searchParams.delete('iss');
    else url.searchParams.set('iss', misbehave.authorization_iss);
    ctx.set('location', url.toString());
  }
});

// POST /token switches: late, or failing (before oidc-provider reads the request, so the
// body is read here to count by grant type).
provider.use(async (ctx, next) => {
  if (ctx.path === '/token' && ctx.method === 'POST') {
    counts.token_received += 1;
    if (misbehave.token_delay_ms) {
      await new Promise((resolve) => { setTimeout(resolve, misbehave.token_delay_ms); });
    }
    if (misbehave.token_status) {
      const form = new URLSearchParams(await readBody(ctx));
      if (form.get('grant_type') === 'refresh_token') counts.refresh_refused_on_purpose += 1;
      else counts.code_refused_on_purpose += 1;
      ctx.status = misbehave.token_status;
      if (misbehave.token_status === 400) {
        ctx.body = { error: 'invalid_grant', error_description: 'refused on purpose' };
      } else {
        ctx.type = 'html';
        ctx.body = page('Unavailable', '<p>misbehaving on purpose</p>');
      }
      return undefined;
    }
  }
  return next();
});

// Adobe IMS's ways (config.ims).
if (ims) {
  provider.use(async (ctx, next) => {
    // client_secret_post only: oidc-provider takes HTTP Basic for a client_secret_post client.
    if (['/token', '/token/revocation'].includes(ctx.path) && ctx.method === 'POST'
      && /^basic /i.test(ctx.get('authorization'))) {
      ctx.status = 401;
      ctx.type = 'json';
      ctx.body = { error: 'invalid_client', error_description: 'client credentials go in the request body (client_secret_post)' };
      return undefined;
    }
    if (ctx.path === '/auth' && ctx.method === 'GET' && typeof ctx.query.scope === 'string') {
      const { scope } = ctx.query;
      if (/\s/.test(scope.trim())) {
        ctx.status = 400;
        ctx.type = 'html';
        ctx.body = page('Error', '<pre id="error">invalid_scope: scopes are comma-separated</pre>');
        return undefined;
      }
      // oidc-provider reads space-separated scopes; IMS's commas become spaces here.
      ctx.query = { ...ctx.query, scope: scope.split(',').filter(Boolean).join(' ') };
    }
    if (ctx.path === '/ims/logout/v1' && ctx.method === 'GET') {
      counts.ims_logout += 1;
      const client = (config.clients || []).find((c) => c.client_id === ctx.query.client_id);
      const target = ctx.query.redirect_uri;
      if (!client || !(client.post_logout_redirect_uris || []).includes(target)) {
        ctx.status = 400;
        ctx.type = 'html';
        ctx.body = page('Error', '<pre id="error">invalid client_id or redirect_uri</pre>');
        return undefined;
      }
      try {
        const session = await provider.Session.get(ctx);
        await session.destroy();
      } catch (err) {
        process.stderr.write(`ims logout: ${err?.message}\n`);
      }
      ctx.status = 302;
      ctx.redirect(target);
      return undefined;
    }
    await next();
    if (ctx.path === '/.well-known/openid-configuration' && ctx.body) {
      const doc = typeof ctx.body === 'string' ? JSON.parse(ctx.body) : { ...ctx.body };
      delete doc.end_session_endpoint;
      ctx.body = doc;
    }
    return undefined;
  });
}

async function finish(ctx, result, mergeWithLastSubmission) {
  const returnTo = await provider.interactionResult(ctx.req, ctx.res, result, { mergeWithLastSubmission });
  ctx.redirect(returnTo);
  ctx.status = 303;
}

// Errors of the interaction pages (expired or missing interaction cookie, ...) as a page.
provider.use(async (ctx, next) => {
  try {
    await next();
  } catch (err) {
    if (!ctx.path.startsWith('/interaction/')) throw err;
    process.stderr.write(`interaction error: ${err?.message}\n`);
    ctx.status = err.statusCode || err.status || 400;
    ctx.type = 'html';
    ctx.body = page('Error', `<pre id="error">${esc(`${err.name}: ${err.message}`)}</pre>`);
  }
});

// Test-control endpoints and the login interaction.
provider.use(async (ctx, next) => {
  const { path, method } = ctx;

  if (path.startsWith('/__test/')) {
    ctx.set('cache-control', 'no-store');
    if (path === '/__test/counts' && method === 'GET') {
      ctx.body = counts;
      return undefined;
    }
    if (path === '/__test/reset' && method === 'POST') {
      counts = freshCounts();
      ctx.body = counts;
      return undefined;
    }
    if (path === '/__test/private-jwks' && method === 'GET') {
      ctx.body = jwks;
      return undefined;
    }
    if (path === '/__test/misbehave' && method === 'POST') {
      misbehave = JSON.parse(await readBody(ctx));
      ctx.body = misbehave;
      return undefined;
    }
    if (path === '/__test/sign' && method === 'POST') {
      ctx.type = 'application/jwt';
      ctx.body = signJwt(JSON.parse(await readBody(ctx)));
      return undefined;
    }
    ctx.status = 404;
    ctx.body = { error: 'unknown test endpoint' };
    return undefined;
  }

  const m = /^\/interaction\/([^/]+)(?:\/(login|abort))?$/.exec(path);
  if (!m) return next();
  const [, uid, action] = m;
  ctx.set('cache-control', 'no-store');

  if (!action && method === 'GET') {
    const details = await provider.interactionDetails(ctx.req, ctx.res);
    if (details.uid !== uid) ctx.throw(400, 'interaction mismatch');
    if (details.prompt.name === 'login') {
      ctx.type = 'html';
      ctx.body = loginPage(uid, details.params);
      return undefined;
    }
    // Consent is never asked: loadExistingGrant grants what is requested. Should another prompt
    // come up, finish it with a grant that covers the request.
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
    const d = details.prompt.details || {};
    if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(' '));
    if (d.missingOIDCClaims) grant.addOIDCClaims(d.missingOIDCClaims);
    if (d.missingResourceScopes) {
      for (const [indicator, scope] of Object.entries(d.missingResourceScopes)) {
        grant.addResourceScope(indicator, scope.join(' '));
      }
    }
    const grantId = await grant.save();
    return finish(ctx, { consent: { grantId } }, true);
  }

  if (action === 'login' && method === 'POST') {
    const details = await provider.interactionDetails(ctx.req, ctx.res);
    if (details.uid !== uid) ctx.throw(400, 'interaction mismatch');
    const form = new URLSearchParams(await readBody(ctx));
    const login = (form.get('login') || '').trim();
    counts.login_forms_posted += 1;
    if (!login) {
      ctx.status = 400;
      ctx.type = 'html';
      ctx.body = loginPage(uid, details.params, 'A login name is required.');
      return undefined;
    }
    return finish(ctx, { login: { accountId: ims ? imsSub(login) : login } }, false);
  }

  if (action === 'abort' && method === 'POST') {
    return finish(ctx, {
      error: 'access_denied',
      error_description: 'End-User aborted interaction',
    }, false);
  }

  ctx.status = 405;
  return undefined;
});

const server = http.createServer(provider.callback());
server.on('error', (err) => {
  process.stderr.write(`listen failed on 127.0.0.1:${config.port}: ${err.code || err.message}\n`);
  process.exit(err.code === 'EADDRINUSE' ? 3 : 1);
});
server.listen(config.port, '127.0.0.1', () => {
  process.stdout.write(`READY ${issuer}\n`);
});
