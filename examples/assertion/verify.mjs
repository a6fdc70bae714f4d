#!/usr/bin/env node
// Verifies linkgate's identity assertion (X-Linkgate-Jwt-Assertion) with nothing but Node's
// built-in modules (node:crypto, node:http): no JWT library to install or trust.
//
// Two ways to run it:
//   node verify.mjs --jwks URL --issuer ISS --audience AUD --token JWT
//       verifies one token; prints its claims as JSON and exits 0, or prints why and exits 1.
//   node verify.mjs --jwks URL --issuer ISS --audience AUD --listen PORT [--header NAME]
//       an upstream: every request must carry a valid assertion in the header (default
//       x-linkgate-jwt-assertion); 200 with the claims as JSON, else 401 with the reason.
//       Prints "READY <port>" once listening.
//
// What it checks, in this order (every check is needed; leave none out in your own code):
//   1. three base64url parts; the header's alg is ES256 or RS256 (never "none", never HS*),
//      and names a kid;
//   2. the kid is in linkgate's JWKS ({public_url}{proxy_prefix}/.well-known/jwks.json, or
//      /.well-known/jwks.json on the admin listener); an unknown kid refetches the JWKS at most
//      once every 10 s (a rotated key is published before it signs);
//   3. the signature (ES256: r||s, "ieee-p1363"; RS256: PKCS#1 v1.5), over "header.payload";
//   4. iss is linkgate's public URL, aud is this upstream's audience (so an assertion made for
//      another upstream is refused here), exp in the future and nbf/iat not in the future
//      (5 s leeway each way).
import { createPublicKey, verify } from 'node:crypto';
import { createServer } from 'node:http';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => {
    if (arg.startsWith('--')) pairs.push([arg.slice(2), all[i + 1]]);
    return pairs;
  }, []),
);
for (const required of ['jwks', 'issuer', 'audience']) {
  if (!args[required]) {
    console.error(`missing --${required}`);
    process.exit(2);
  }
}
const LEEWAY = 5;
const ALGS = { ES256: { dsaEncoding: 'ieee-p1363' }, RS256: {} };

let keys = new Map();
let fetchedAt = 0;

async function loadKeys() {
  const resp = await fetch(args.jwks);
  if (!resp.ok) throw new Error(`JWKS answered ${resp.status}`);
  const jwks = await resp.json();
  keys = new Map(jwks.keys.map((jwk) => [jwk.kid, jwk]));
  fetchedAt = Date.now();
}

async function keyFor(kid) {
  if (!keys.has(kid) && Date.now() - fetchedAt > 10_000) await loadKeys();
  const jwk = keys.get(kid);
  if (!jwk) throw new Error(`unknown kid ${kid}`);
  return jwk;
}

function decode(part) {
  return JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
}

export async function verifyAssertion(token) {
  const parts = String(token || '').split('.');
  if (parts.length !== 3) throw new Error('not a JWS compact token');
  const header = decode(parts[0]);
  const options = ALGS[header.alg];
  if (!options) throw new Error(`alg ${header.alg} not allowed`);
  if (!header.kid) throw new Error('no kid');
  const jwk = await keyFor(header.kid);
  if (jwk.alg && jwk.alg !== header.alg) throw new Error('alg does not match the key');
  const key = createPublicKey({ key: jwk, format: 'jwk' });
  const signed = Buffer.from(`${parts[0]}.${parts[1]}`);
  const signature = Buffer.from(parts[2], 'base64url');
  if (!verify('sha256', signed, { key, ...options }, signature)) throw new Error('bad signature');
  const claims = decode(parts[1]);
  const now = Math.floor(Date.now() / 1000);
  if (claims.iss !== args.issuer) throw new Error(`iss ${claims.iss} is not ${args.issuer}`);
  const aud = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
  if (!aud.includes(args.audience)) throw new Error(`aud ${claims.aud} is not ${args.audience}`);
  if (typeof claims.exp !== 'number' || claims.exp + LEEWAY < now) throw new Error('expired');
  if ((claims.nbf ?? 0) - LEEWAY > now || (claims.iat ?? 0) - LEEWAY > now) {
    throw new Error('not valid yet');
  }
  return claims;
}

if (args.token) {
  try {
    await loadKeys();
    console.log(JSON.stringify(await verifyAssertion(args.token)));
  } catch (e) {
    console.error(`refused: ${e.message}`);
    process.exit(1);
  }
} else if (args.listen) {
  const headerName = (args.header || 'x-linkgate-jwt-assertion').toLowerCase();
  await loadKeys().catch((e) => console.error(`JWKS not loaded yet: ${e.message}`));
  const server = createServer(async (req, res) => {
    const answer = (status, body) => {
      const text = JSON.stringify(body);
      res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
      res.end(text);
    };
    try {
      answer(200, { ok: true, path: req.url, claims: await verifyAssertion(req.headers[headerName]) });
    } catch (e) {
      answer(401, { ok: false, error: e.message });
    }
  });
  server.listen(Number(args.listen), '127.0.0.1', () => console.log(`READY ${server.address().port}`));
} else {
  console.error('give --token JWT or --listen PORT');
  process.exit(2);
}
