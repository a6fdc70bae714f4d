// nginx njs: verifies linkgate's identity assertion before nginx serves or proxies a request.
// Used through `auth_request` (see nginx-njs.conf): 204 when the assertion is valid (with the
// claims in X-Assertion-Sub / -Email / -Groups for `auth_request_set`), 401 otherwise.
//
// Written for njs 0.7 (Debian 12's libnginx-mod-http-js): WebCrypto, ngx.fetch, Buffer. ES256
// only (linkgate's default): njs 0.7 imports EC keys as SPKI, built here from the JWK's x and
// y. Variables (set in nginx.conf): $assertion_jwks (linkgate's JWKS URL; give nginx a
// `resolver` if it names a host), $assertion_issuer (server.public_url), $assertion_audience
// (this upstream's audience), $assertion_header (default x-linkgate-jwt-assertion).

const LEEWAY = 5;
// DER prefix of a P-256 SubjectPublicKeyInfo, before the 65-byte uncompressed point.
const P256_SPKI = Buffer.from('3059301306072a8648ce3d020106082a8648ce3d030107034200', 'hex');

function part(text) {
    return JSON.parse(Buffer.from(text, 'base64url').toString());
}

async function check(r) {
    try {
        const name = r.variables.assertion_header || 'x-linkgate-jwt-assertion';
        const token = r.headersIn[name] || '';
        const parts = token.split('.');
        if (parts.length !== 3) throw new Error('no assertion');
        const header = part(parts[0]);
        if (header.alg !== 'ES256' || !header.kid) throw new Error('alg ' + header.alg + ' not allowed');
        const reply = await ngx.fetch(r.variables.assertion_jwks);
        if (reply.status !== 200) throw new Error('JWKS answered ' + reply.status);
        const jwks = await reply.json();
        const jwk = jwks.keys.find((k) => k.kid === header.kid && k.kty === 'EC' && k.crv === 'P-256');
        if (!jwk) throw new Error('unknown kid ' + header.kid);
        const point = Buffer.concat([Buffer.from([4]), Buffer.from(jwk.x, 'base64url'), Buffer.from(jwk.y, 'base64url')]);
        const key = await crypto.subtle.importKey('spki', Buffer.concat([P256_SPKI, point]),
            { name: 'ECDSA', namedCurve: 'P-256' }, false, ['verify']);
        const ok = await crypto.subtle.verify({ name: 'ECDSA', hash: 'SHA-256' }, key,
            Buffer.from(parts[2], 'base64url'), Buffer.from(parts[0] + '.' + parts[1]));
        if (!ok) throw new Error('bad signature');
        const claims = part(parts[1]);
        const now = Math.floor(Date.now() / 1000);
        if (claims.iss !== r.variables.assertion_issuer) throw new Error('iss ' + claims.iss);
        const aud = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
        if (aud.indexOf(r.variables.assertion_audience) < 0) throw new Error('aud ' + claims.aud);
        if (typeof claims.exp !== 'number' || claims.exp + LEEWAY < now) throw new Error('expired');
        if ((claims.nbf || 0) - LEEWAY > now) throw new Error('not valid yet');
        r.headersOut['X-Assertion-Sub'] = String(claims.sub);
        r.headersOut['X-Assertion-Email'] = String(claims.email || '');
        r.headersOut['X-Assertion-Groups'] = (claims.groups || []).join(',');
        r.return(204);
    } catch (e) {
        r.error('assertion refused: ' + e.message);
        r.return(401);
    }
}

export default { check };
