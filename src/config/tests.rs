//! Scenario tests: whole files in, a `Config` or exact `file:line:col: key: reason` lines out.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

// === helpers ===

/// 32 bytes 0..=31, standard base64 with padding.
const SECRET_STD: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
/// 32 bytes 200..=231, URL-safe base64 without padding.
const SECRET_URL_NOPAD: &str = "yMnKy8zNzs_Q0dLT1NXW19jZ2tvc3d7f4OHi4-Tl5uc";

/// The smallest valid file: one upstream. Tests put the section under test *before* it so
/// line numbers in assertions are easy to read.
const UPSTREAM: &str = "[[upstreams]]\nname = \"app\"\nurl = \"http://127.0.0.1:8080\"\n";

fn env_from(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| map.get(name).cloned()
}

fn parse_with(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
    Config::parse(text, "test.toml", &env_from(env))
}

fn parse_ok(text: &str) -> Config {
    match parse_with(text, &[("LINKGATE_COOKIE_SECRET", SECRET_STD)]) {
        Ok(c) => c,
        Err(e) => panic!("expected a valid config, got:\n{e}"),
    }
}

fn errors_of(text: &str) -> Vec<ConfigError> {
    errors_with(text, &[("LINKGATE_COOKIE_SECRET", SECRET_STD)])
}

fn errors_with(text: &str, env: &[(&str, &str)]) -> Vec<ConfigError> {
    match parse_with(text, env) {
        Ok(_) => panic!("expected errors, the config was accepted:\n{text}"),
        Err(e) => e.errors,
    }
}

/// Asserts that an error is at `line:col` on `key` and its reason contains `fragment`.
#[track_caller]
fn assert_error(errors: &[ConfigError], line: usize, col: usize, key: &str, fragment: &str) {
    let found = errors
        .iter()
        .any(|e| e.line == line && e.col == col && e.key == key && e.reason.contains(fragment));
    assert!(
        found,
        "no error {line}:{col} {key}: …{fragment}… among:\n{}",
        errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

fn with_upstream(section: &str) -> String {
    format!("{section}\n{UPSTREAM}")
}

/// A minimal `[sso]` with explicit secret from the environment.
fn sso_section() -> &'static str {
    "[sso]\npreset = \"adobe-ims\"\nclient_id = \"linkgate\"\nclient_secret = \"${SSO_SECRET}\"\n"
}

fn sso_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("SSO_SECRET", "sso-secret-value"),
        ("LINKGATE_COOKIE_SECRET", SECRET_STD),
    ]
}

/// Writes a self-signed EC certificate and its key as PEM files.
fn self_signed(dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
    use openssl::asn1::Asn1Time;
    use openssl::bn::BigNum;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::pkey::PKey;
    use openssl::x509::{X509Builder, X509NameBuilder};

    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "localhost").unwrap();
    let name = name.build();
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&BigNum::from_u32(1).unwrap().to_asn1_integer().unwrap())
        .unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(30).unwrap())
        .unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    let cert = b.build();
    let cert_path = dir.join(format!("{stem}.crt"));
    let key_path = dir.join(format!("{stem}.key"));
    std::fs::write(&cert_path, cert.to_pem().unwrap()).unwrap();
    std::fs::write(&key_path, key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    (cert_path, key_path)
}

// === happy paths ===

#[test]
fn minimal_config_fills_every_default() {
    let c = parse_ok(UPSTREAM);
    assert_eq!(c.server.listen, "0.0.0.0:4180".parse().unwrap());
    assert_eq!(c.server.admin_listen, None);
    assert_eq!(c.server.proxy_prefix, "/oauth2");
    assert!(c.server.threads >= 1);
    assert!(c.server.trusted_proxies.is_empty());
    assert!(c.server.tls.is_none());
    assert_eq!(c.server.graceful_shutdown_timeout, Duration::from_secs(10));
    assert_eq!(
        c.server.upgrade_sock,
        PathBuf::from("/tmp/linkgate_upgrade.sock")
    );
    assert_eq!(c.server.pid_file, PathBuf::from("/tmp/linkgate.pid"));

    let u = &c.upstreams[0];
    assert_eq!(u.name, "app");
    assert_eq!((u.host.as_str(), u.port, u.tls), ("127.0.0.1", 8080, false));
    assert_eq!(u.sni, "");
    assert_eq!(u.base_path, "");
    assert!(u.hosts.is_empty());
    assert_eq!(u.path_prefix, "/");
    assert_eq!(u.connect_timeout, Duration::from_secs(5));
    assert_eq!(u.read_timeout, Duration::from_secs(60));
    assert!(u.websockets);

    assert!(c.sso.is_none() && c.account.is_none() && c.redis.is_none());
    assert_eq!(c.link.mode, LinkMode::Enforce);
    assert_eq!(c.link.required_from, default_required_from());
    assert!(c.link.allow_disconnect);

    let s = &c.session;
    assert_eq!(s.cookie_name, "__Host-linkgate");
    assert!(s.cookie_secret.is_none());
    assert_eq!(s.cookie_domain, None);
    assert!(s.cookie_secure);
    assert_eq!(s.cookie_samesite, SameSite::Lax);
    assert_eq!(s.ttl, Duration::from_secs(8 * 3600));
    assert_eq!(s.refresh_before, Duration::from_secs(300));
    assert_eq!(s.store, StoreKind::Memory);
    assert_eq!(s.cache_ttl, Duration::from_secs(30));
    assert_eq!(s.cache_capacity, 100_000);

    assert!(c.authz.email_domains.is_empty());
    assert_eq!(c.authz.groups_claim, "groups");
    assert!(!c.authz.bearer_tokens);
    assert!(c.headers.pass_user_headers);
    assert!(!c.headers.pass_access_token && !c.headers.set_authorization);
    assert_eq!(c.headers.names.user.as_str(), "x-forwarded-user");
    assert_eq!(
        c.headers.names.link_status.as_str(),
        "x-linkgate-link-status"
    );
    assert_eq!(c.pages.templates_dir, None);
    assert_eq!(c.log.level, "info");
    assert_eq!(c.log.format, LogFormat::Text);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert_eq!(c.path, PathBuf::from("test.toml"));
}

#[test]
fn env_interpolation_with_several_variables_and_escape() {
    let text = format!(
        "[server]\npublic_url = \"https://${{HOST}}:${{PORT}}/\"\n[pages]\nbanner = \"costs $$5, literal $${{HOST}}\"\n[redis]\nurl = \"redis://${{REDIS_HOST}}:6379/2\"\n[session]\nstore = \"redis\"\n{UPSTREAM}"
    );
    let c = parse_with(
        &text,
        &[
            ("HOST", "gate.example.com"),
            ("PORT", "8443"),
            ("REDIS_HOST", "10.1.2.3"),
        ],
    )
    .unwrap();
    assert_eq!(
        c.server.public_url.unwrap().as_str(),
        "https://gate.example.com:8443/"
    );
    assert_eq!(
        c.pages.banner.as_deref(),
        Some("costs $$5, literal ${HOST}")
    );
    assert_eq!(
        c.redis.unwrap().url.unwrap().as_str(),
        "redis://10.1.2.3:6379/2"
    );
}

#[test]
fn integers_and_booleans_may_come_from_env() {
    let text = with_upstream(
        "[server]\nthreads = \"${THREADS}\"\n[session]\ncookie_secure = \"${SECURE}\"",
    );
    let c = parse_with(&text, &[("THREADS", "3"), ("SECURE", "false")]).unwrap();
    assert_eq!(c.server.threads, 3);
    assert!(!c.session.cookie_secure);
}

#[test]
fn file_secrets_are_read_and_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("cookie.key"),
        format!("{SECRET_URL_NOPAD}\n"),
    )
    .unwrap();
    std::fs::write(dir.path().join("sso.secret"), "  s3cret value \r\n\n").unwrap();
    std::fs::write(dir.path().join("redis.pass"), "hunter2\n").unwrap();
    let text = format!(
        "[sso]\npreset = \"adobe-ims\"\nclient_id = \"c\"\nclient_secret_file = \"sso.secret\"\n\
         [session]\ncookie_secret_file = \"cookie.key\"\nstore = \"redis\"\n\
         [redis]\nurl = \"redis://127.0.0.1:6379\"\npassword_file = \"{}\"\n{UPSTREAM}",
        dir.path().join("redis.pass").display()
    );
    let config_path = dir.path().join("config.toml");
    std::fs::write(&config_path, text).unwrap();
    // Relative `*_file` paths are relative to the config file, whatever the cwd.
    let c = Config::load(&config_path).unwrap();
    let expected: Vec<u8> = (200u8..232).collect();
    assert_eq!(c.session.cookie_secret.unwrap().expose().to_vec(), expected);
    assert_eq!(
        c.sso.unwrap().client_secret.unwrap().expose(),
        "  s3cret value"
    );
    assert_eq!(c.redis.unwrap().password.unwrap().expose(), "hunter2");
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert_eq!(c.path, config_path);
}

#[test]
fn preset_adobe_ims_leaves_endpoints_to_discovery_and_explicit_keys_win() {
    let text = with_upstream(
        "[sso]\npreset = \"adobe-ims\"\nclient_id = \"magento\"\nclient_secret = \"${SSO_SECRET}\"\n\
         userinfo_url = \"https://ims.example.test/userinfo\"\n[session]\ncookie_secret = \"${LINKGATE_COOKIE_SECRET}\"",
    );
    let c = parse_with(&text, &sso_env()).unwrap();
    let sso = c.sso.unwrap();
    assert_eq!(sso.preset, Some(Preset::AdobeIms));
    assert_eq!(sso.display_name, "Magento.com");
    assert_eq!(
        sso.issuer.as_deref(),
        Some("https://ims-na1.adobelogin.com")
    );
    let url = |u: &Option<url::Url>| u.as_ref().map(|u| u.as_str().to_string());
    assert_eq!(
        url(&sso.discovery_url).as_deref(),
        Some("https://ims-na1.adobelogin.com/ims/.well-known/openid-configuration")
    );
    // Discovery names the endpoints; Adobe's documented ones fill what it leaves out.
    assert_eq!(sso.authorize_url, None);
    assert_eq!(sso.token_url, None);
    assert_eq!(sso.jwks_url, None);
    assert_eq!(
        url(&sso.documented.authorize).as_deref(),
        Some("https://ims-na1.adobelogin.com/ims/authorize/v2")
    );
    assert_eq!(
        url(&sso.documented.token).as_deref(),
        Some("https://ims-na1.adobelogin.com/ims/token/v3")
    );
    assert_eq!(
        url(&sso.documented.jwks).as_deref(),
        Some("https://ims-na1.adobelogin.com/ims/keys")
    );
    assert_eq!(
        url(&sso.documented.end_session).as_deref(),
        Some("https://ims-na1.adobelogin.com/ims/logout/v1")
    );
    assert_eq!(sso.logout_params, crate::config::LogoutParams::Ims);
    assert_eq!(sso.scope_separator, ",");
    // Explicit key overrides the preset.
    assert_eq!(
        url(&sso.userinfo_url).as_deref(),
        Some("https://ims.example.test/userinfo")
    );
    assert_eq!(
        sso.scopes,
        ["openid", "AdobeID", "email", "profile", "offline_access"]
    );
    assert_eq!(sso.token_auth_method, TokenAuthMethod::ClientSecretPost);
    assert_eq!(sso.redirect_path, "/oauth2/callback");
    assert_eq!(sso.id_token_algs, ["RS256"]);
    assert_eq!(sso.subject_claim, "sub");
    assert_eq!(sso.email_claim, "email");
    assert_eq!(sso.http_timeout, Duration::from_secs(10));
    assert_eq!(sso.client_secret.unwrap().expose(), "sso-secret-value");
}

#[test]
fn preset_endpoints_documented_puts_adobes_endpoints_before_discovery() {
    let text = with_upstream(
        "[sso]\npreset = \"adobe-ims\"\nclient_id = \"m\"\nclient_secret = \"${SSO_SECRET}\"\n\
         issuer = \"https://ims.example.test\"\npreset_endpoints = \"documented\"\n\
         logout_params = \"oidc\"\nscope_separator = \"space\"\n\
         [session]\ncookie_secret = \"${LINKGATE_COOKIE_SECRET}\"",
    );
    let c = parse_with(&text, &sso_env()).unwrap();
    let sso = c.sso.unwrap();
    let url = |u: &Option<url::Url>| u.as_ref().map(|u| u.as_str().to_string());
    assert_eq!(
        url(&sso.discovery_url).as_deref(),
        Some("https://ims.example.test/ims/.well-known/openid-configuration")
    );
    assert_eq!(
        url(&sso.token_url).as_deref(),
        Some("https://ims.example.test/ims/token/v3")
    );
    assert_eq!(
        url(&sso.end_session_url).as_deref(),
        Some("https://ims.example.test/ims/logout/v1")
    );
    assert_eq!(sso.logout_params, crate::config::LogoutParams::Oidc);
    assert_eq!(sso.scope_separator, " ");
    // A separator IMS nor OAuth would read is refused.
    let bad = with_upstream(
        "[sso]\npreset = \"adobe-ims\"\nclient_id = \"m\"\nclient_secret = \"${SSO_SECRET}\"\n\
         scope_separator = \";\"\n[session]\ncookie_secret = \"${LINKGATE_COOKIE_SECRET}\"",
    );
    assert!(parse_with(&bad, &sso_env()).is_err());
}

#[test]
fn a_long_refresh_before_is_warned_about() {
    let text = with_upstream(
        "[sso]\npreset = \"adobe-ims\"\nclient_id = \"m\"\nclient_secret = \"${SSO_SECRET}\"\n\
         [session]\ncookie_secret = \"${LINKGATE_COOKIE_SECRET}\"\nrefresh_before = \"30m\"",
    );
    let c = parse_with(&text, &sso_env()).unwrap();
    assert!(
        c.warnings
            .iter()
            .any(|w| w.contains("refresh_before") && w.contains("half their lifetime")),
        "{:?}",
        c.warnings
    );
}

#[test]
fn explicit_provider_with_issuer_derives_discovery() {
    let text = with_upstream(
        "[server]\nproxy_prefix = \"/_auth\"\n[sso]\nissuer = \"https://id.example.com/realm/\"\nclient_id = \"c\"\n\
         token_auth_method = \"none\"\nscopes = \"openid, email groups\"\nid_token_algs = [\"es256\", \"RS256\"]\n\
         extra_auth_params = { prompt = \"login\", acr_values = \"mfa\" }\ngroups_claim = \"roles\"\n\
         [session]\ncookie_secret = \"${LINKGATE_COOKIE_SECRET}\"",
    );
    let c = parse_ok(&text);
    let sso = c.sso.unwrap();
    // The issuer is kept byte for byte (it is compared with `iss`).
    assert_eq!(sso.issuer.as_deref(), Some("https://id.example.com/realm/"));
    assert_eq!(
        sso.discovery_url.unwrap().as_str(),
        "https://id.example.com/realm/.well-known/openid-configuration"
    );
    assert!(sso.authorize_url.is_none());
    assert!(sso.client_secret.is_none());
    assert_eq!(sso.token_auth_method, TokenAuthMethod::None);
    assert_eq!(sso.scopes, ["openid", "email", "groups"]);
    assert_eq!(sso.id_token_algs, ["ES256", "RS256"]);
    assert_eq!(sso.redirect_path, "/_auth/callback");
    assert_eq!(
        sso.extra_auth_params.get("prompt").map(String::as_str),
        Some("login")
    );
    assert_eq!(sso.extra_auth_params.len(), 2);
    assert_eq!(sso.groups_claim.as_deref(), Some("roles"));
}

#[test]
fn account_jwt_and_oauth2_sources() {
    let jwt = with_upstream(&format!(
        "{}[account]\nsource = \"jwt\"\ncookie = \"platform_jwt\"\nissuer = \"https://accounts.magento.cloud\"\n\
         audience = \"linkgate\"\njwks_url = \"https://accounts.magento.cloud/.well-known/jwks.json\"\n\
         leeway = \"0s\"\n[session]\ncookie_secret = \"${{LINKGATE_COOKIE_SECRET}}\"",
        sso_section()
    ));
    let c = parse_with(&jwt, &sso_env()).unwrap();
    let account = c.account.unwrap();
    assert_eq!(account.display_name, "accounts.magento.cloud");
    let AccountSource::Jwt(j) = account.source else {
        panic!("expected a jwt source");
    };
    assert_eq!(j.location, JwtLocation::Cookie("platform_jwt".into()));
    assert_eq!(j.issuer, "https://accounts.magento.cloud");
    assert_eq!(j.audience, ["linkgate"]);
    assert_eq!(j.algs, ["RS256"]);
    assert_eq!(j.leeway, Duration::ZERO);
    assert_eq!(j.subject_claim, "sub");

    let oauth2 = with_upstream(&format!(
        "{}[account]\nsource = \"oauth2\"\ndisplay_name = \"Cloud\"\nclient_id = \"acct\"\nclient_secret = \"${{SSO_SECRET}}\"\n\
         authorize_url = \"https://accounts.magento.cloud/oauth2/authorize\"\ntoken_url = \"https://accounts.magento.cloud/oauth2/token\"\n\
         userinfo_url = \"https://api.magento.cloud/users/me\"\nscopes = [\"account\"]\nsubject_claim = \"id\"\n\
         [session]\ncookie_secret = \"${{LINKGATE_COOKIE_SECRET}}\"",
        sso_section()
    ));
    let c = parse_with(&oauth2, &sso_env()).unwrap();
    let account = c.account.unwrap();
    assert_eq!(account.display_name, "Cloud");
    let AccountSource::OAuth2(p) = account.source else {
        panic!("expected an oauth2 source");
    };
    assert_eq!(p.display_name, "Cloud");
    assert_eq!(p.redirect_path, "/oauth2/account/callback");
    assert_eq!(p.subject_claim, "id");
    assert_eq!(p.scopes, ["account"]);
    assert_eq!(p.token_auth_method, TokenAuthMethod::ClientSecretBasic);
}

#[test]
fn skip_routes_are_parsed_and_compiled() {
    let c = parse_ok(&with_upstream(
        "[authz]\nskip_auth_routes = [\"GET=^/health$\", \"^/public/\", \"^/q=1$\"]",
    ));
    let routes = &c.authz.skip_auth_routes;
    assert_eq!(routes.len(), 3);
    assert_eq!(routes[0].method, Some(http::Method::GET));
    assert!(routes[0].path.is_match("/health"));
    assert!(!routes[0].path.is_match("/healthz"));
    assert_eq!(routes[1].method, None);
    assert!(routes[1].path.is_match("/public/app.css"));
    assert_eq!(routes[2].method, None);
    assert!(routes[2].path.is_match("/q=1"));
}

#[test]
fn authz_lists_are_normalised() {
    let c = parse_ok(&with_upstream(
        "[authz]\nemail_domains = [\"Example.COM\", \"@corp.example\"]\nallowed_groups = [\"admins\"]\n\
         extra_jwt_issuers = [\"https://issuer.example.com/a=b=my-audience\"]\n\
         redirect_domains = [\".Example.com\", \"shop.example.org:8443\"]\nbearer_tokens = true",
    ));
    let a = c.authz;
    assert_eq!(a.email_domains, ["example.com", "corp.example"]);
    assert_eq!(a.allowed_groups, ["admins"]);
    assert_eq!(
        a.extra_jwt_issuers,
        [ExtraIssuer {
            issuer: "https://issuer.example.com/a=b".into(),
            audience: "my-audience".into()
        }]
    );
    assert_eq!(
        a.redirect_domains,
        [".example.com", "shop.example.org:8443"]
    );
    assert!(a.bearer_tokens);
}

#[test]
fn upstream_url_is_taken_apart_and_hosts_lower_cased() {
    let c = parse_ok(
        "[[upstreams]]\nname = \"shop\"\nurl = \"https://Shop.Internal/base/\"\nhosts = [\"Shop.Example.com\", \"*.shop.example.com\"]\n\
         path_prefix = \"/api\"\nwebsockets = false\nread_timeout = \"2m\"\n\
         [[upstreams]]\nname = \"v6\"\nurl = \"http://[::1]:9000\"\n",
    );
    let u = &c.upstreams[0];
    assert_eq!(
        (u.host.as_str(), u.port, u.tls),
        ("shop.internal", 443, true)
    );
    assert_eq!(u.sni, "shop.internal");
    assert_eq!(u.base_path, "/base");
    assert_eq!(u.hosts, ["shop.example.com", "*.shop.example.com"]);
    assert_eq!(u.path_prefix, "/api");
    assert!(!u.websockets);
    assert_eq!(u.read_timeout, Duration::from_secs(120));
    let v6 = &c.upstreams[1];
    assert_eq!(
        (v6.host.as_str(), v6.port, v6.sni.as_str()),
        ("::1", 9000, "")
    );
}

#[test]
fn server_values_and_bare_ip_trusted_proxies() {
    let c = parse_ok(&with_upstream(
        "[server]\nlisten = \"[::]:8080\"\nadmin_listen = \"127.0.0.1:9180\"\nthreads = 2\n\
         trusted_proxies = [\"10.0.0.0/8\", \"192.0.2.7\", \"fd00::1\", \"172.16.5.4/12\"]\n\
         graceful_shutdown_timeout = \"0s\"",
    ));
    let s = c.server;
    assert_eq!(s.listen, "[::]:8080".parse().unwrap());
    assert_eq!(s.admin_listen, Some("127.0.0.1:9180".parse().unwrap()));
    assert_eq!(s.threads, 2);
    let nets: Vec<String> = s.trusted_proxies.iter().map(ToString::to_string).collect();
    assert_eq!(
        nets,
        ["10.0.0.0/8", "192.0.2.7/32", "fd00::1/128", "172.16.0.0/12"]
    );
    assert_eq!(s.graceful_shutdown_timeout, Duration::ZERO);
}

#[test]
fn link_required_from_accepts_string_or_toml_datetime() {
    let c = parse_ok(&with_upstream(
        "[link]\nmode = \"warn\"\nrequired_from = 2030-01-02T03:04:05+01:00\nallow_disconnect = false",
    ));
    assert_eq!(c.link.mode, LinkMode::Warn);
    assert_eq!(c.link.required_from.unix_timestamp(), 1_893_549_845);
    assert!(!c.link.allow_disconnect);
    let c = parse_ok(&with_upstream(
        "[link]\nrequired_from = \"2030-01-02T02:04:05Z\"",
    ));
    assert_eq!(c.link.required_from.unix_timestamp(), 1_893_549_845);
}

#[test]
fn header_names_can_be_overridden() {
    let c = parse_ok(&with_upstream(
        "[headers]\npass_access_token = true\n[headers.names]\nuser = \"X-Auth-User\"\naccess_token = \"X-Auth-Token\"",
    ));
    assert!(c.headers.pass_access_token);
    assert_eq!(c.headers.names.user.as_str(), "x-auth-user");
    assert_eq!(c.headers.names.access_token.as_str(), "x-auth-token");
    assert_eq!(c.headers.names.email.as_str(), "x-forwarded-email");
}

#[test]
fn redis_credentials_leave_the_url() {
    let c = parse_with(
        &with_upstream(
            "[redis]\nurl = \"rediss://cache:${REDIS_PW}@redis.internal:6380/1\"\n[session]\nstore = \"redis\"",
        ),
        &[("REDIS_PW", "p@ss")],
    )
    .unwrap();
    let r = c.redis.unwrap();
    assert_eq!(
        r.url.as_ref().unwrap().as_str(),
        "rediss://redis.internal:6380/1"
    );
    assert_eq!(r.username.as_deref(), Some("cache"));
    assert_eq!(r.password.as_ref().unwrap().expose(), "p@ss");
    assert_eq!(r.mode, RedisMode::Standalone);
    assert_eq!(r.key_prefix, "linkgate:");
    assert_eq!(r.pool_size, 8);
    assert_eq!(r.connect_timeout, Duration::from_secs(2));
    assert_eq!(r.command_timeout, Duration::from_secs(1));
    assert!(!format!("{r:?}").contains("p@ss"));
}

#[test]
fn redis_sentinel_and_cluster_modes() {
    let c = parse_ok(&with_upstream(
        "[redis]\nmode = \"sentinel\"\nnodes = [\"10.0.0.1:26379\", \"redis://sentinel-2:26379\"]\nsentinel_master = \"mymaster\"",
    ));
    let r = c.redis.unwrap();
    assert_eq!(r.mode, RedisMode::Sentinel);
    assert_eq!(r.nodes.len(), 2);
    assert_eq!(r.sentinel_master.as_deref(), Some("mymaster"));
    // [redis] without store = "redis" is legal but pointless: a warning.
    assert!(
        c.warnings.iter().any(|w| w.contains("Redis is not used")),
        "{:?}",
        c.warnings
    );

    let c = parse_ok(&with_upstream(
        "[redis]\nmode = \"cluster\"\nnodes = [\"a.redis:7000\", \"[::1]:7001\"]\n[session]\nstore = \"redis\"",
    ));
    assert_eq!(c.redis.unwrap().mode, RedisMode::Cluster);
}

#[test]
fn literal_secret_is_a_warning_with_position() {
    let c = parse_with(
        &with_upstream(&format!("[session]\ncookie_secret = \"{SECRET_STD}\"")),
        &[],
    )
    .unwrap();
    assert_eq!(
        c.warnings,
        ["test.toml:2:17: session.cookie_secret: literal secret in the config file; prefer ${ENV_VAR} or cookie_secret_file"]
    );
    assert!(c.session.cookie_secret.is_some());
}

#[test]
fn debug_of_a_config_never_shows_a_secret() {
    let text = with_upstream(&format!(
        "{}[session]\ncookie_secret = \"${{LINKGATE_COOKIE_SECRET}}\"\nstore = \"redis\"\n\
         [redis]\nurl = \"redis://127.0.0.1:6379\"\npassword = \"redis-password-value\"",
        sso_section()
    ));
    let c = parse_with(&text, &sso_env()).unwrap();
    let shown = format!("{c:?}");
    let pretty = format!("{c:#?}");
    for s in [&shown, &pretty] {
        assert!(!s.contains("sso-secret-value"), "client secret leaked");
        assert!(!s.contains("redis-password-value"), "redis password leaked");
        assert!(!s.contains(SECRET_STD), "cookie secret leaked");
        // The decoded key would show as a byte array.
        assert!(!s.contains("[0, 1, 2, 3"), "cookie key bytes leaked");
        assert!(s.contains("[redacted]"));
    }
}

#[test]
fn tls_files_that_match_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path(), "gate");
    let text = with_upstream(&format!(
        "[server.tls]\ncert = \"{}\"\nkey = \"{}\"",
        cert.display(),
        key.display()
    ));
    let c = parse_ok(&text);
    let tls = c.server.tls.unwrap();
    assert_eq!((tls.cert, tls.key), (cert, key));
}

#[test]
fn load_reports_an_unreadable_config_file() {
    let e = Config::load(Path::new("/nonexistent/linkgate.toml")).unwrap_err();
    assert_eq!(e.errors.len(), 1);
    assert!(
        e.to_string().starts_with(
            "/nonexistent/linkgate.toml:1:1: (file): cannot read the configuration file"
        ),
        "{e}"
    );
}

#[test]
fn reference_config_parses() {
    let text = include_str!("../../config.toml");
    let env = env_from(&[
        ("LINKGATE_COOKIE_SECRET", SECRET_STD),
        ("LINKGATE_SSO_CLIENT_ID", "linkgate-ims-client"),
        ("LINKGATE_SSO_CLIENT_SECRET", "sso-secret-value"),
    ]);
    let c = match Config::parse(text, "config.toml", &env) {
        Ok(c) => c,
        Err(e) => panic!("reference config.toml does not validate:\n{e}"),
    };
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert_eq!(c.server.listen, "0.0.0.0:4180".parse().unwrap());
    assert_eq!(
        c.server.admin_listen,
        Some("127.0.0.1:9180".parse().unwrap())
    );
    assert!(c.server.tls.is_none());
    assert_eq!(c.upstreams.len(), 1);
    assert_eq!(c.upstreams[0].url.as_str(), "http://127.0.0.1:8080/");
    assert_eq!(c.sso.as_ref().unwrap().preset, Some(Preset::AdobeIms));
    assert!(matches!(
        c.account.as_ref().unwrap().source,
        AccountSource::Jwt(_)
    ));
    assert_eq!(c.session.store, StoreKind::Redis);
    assert_eq!(
        c.redis.as_ref().unwrap().url.as_ref().unwrap().as_str(),
        "redis://127.0.0.1:6379/0"
    );
    assert_eq!(c.link.mode, LinkMode::Enforce);
    assert!(c.session.cookie_secret.is_some());
}

// === bad configs: each asserts line:col, key and a reason fragment ===

#[test]
fn unknown_top_level_section() {
    let e = errors_of(&with_upstream("[serverr]\nlisten = \"0.0.0.0:1\""));
    assert_error(&e, 1, 2, "serverr", "unknown key (did you mean `server`?)");
    assert_error(
        &e,
        1,
        2,
        "serverr",
        "allowed keys: server, upstreams, sso, account, link",
    );
    assert_eq!(e.len(), 1);
}

#[test]
fn unknown_key_in_a_section() {
    let e = errors_of(&with_upstream(
        "[session]\nttl = \"1h\"\ncookie_nam = \"x\"",
    ));
    assert_error(
        &e,
        3,
        1,
        "session.cookie_nam",
        "did you mean `cookie_name`?",
    );
    assert_error(
        &e,
        3,
        1,
        "session.cookie_nam",
        "allowed keys: cookie_name, cookie_secret",
    );
}

#[test]
fn unknown_key_in_an_upstream() {
    let e = errors_of(&format!(
        "{UPSTREAM}[[upstreams]]\nname = \"b\"\nurl = \"http://127.0.0.1:9\"\n  timeout = \"5s\"\n"
    ));
    assert_error(&e, 7, 3, "upstreams[1].timeout", "unknown key");
    assert_error(
        &e,
        7,
        3,
        "upstreams[1].timeout",
        "connect_timeout, read_timeout",
    );
}

#[test]
fn unknown_keys_in_nested_tables() {
    let e = errors_of(&with_upstream(
        "[server.tls]\ncert = \"/x\"\nkey = \"/y\"\nchain = \"/z\"\n[headers.names]\nusr = \"X-U\"",
    ));
    assert_error(
        &e,
        4,
        1,
        "server.tls.chain",
        "unknown key; allowed keys: cert, key",
    );
    assert_error(&e, 6, 1, "headers.names.usr", "did you mean `user`?");
}

#[test]
fn toml_syntax_error_names_the_key() {
    let e = errors_of(&with_upstream(
        "[server]\nthreads = 2\nlisten = 0.0.0.0:4180",
    ));
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!((e[0].line, e[0].col), (3, 13), "{:?}", e[0]);
    assert_eq!(e[0].key, "server.listen");
    assert!(e[0].reason.starts_with("invalid TOML: "), "{:?}", e[0]);
    assert!(e[0].reason.contains("are quotes missing?"), "{:?}", e[0]);
}

#[test]
fn toml_duplicate_key_is_located() {
    let e = errors_of(&with_upstream("[log]\nlevel = \"info\"\nlevel = \"debug\""));
    assert_error(&e, 3, 1, "log.level", "duplicate key");
}

#[test]
fn bad_urls() {
    let e = errors_of(
        "[server]\npublic_url = \"gate.example.com\"\n\
         [[upstreams]]\nname = \"a\"\nurl = \"ftp://files.example.com\"\n\
         [[upstreams]]\nname = \"b\"\nurl = \"http://127.0.0.1:8080/?x=1\"\n",
    );
    assert_error(
        &e,
        2,
        14,
        "server.public_url",
        "invalid URL: relative URL without a base",
    );
    assert_error(
        &e,
        5,
        7,
        "upstreams[0].url",
        "URL scheme must be http or https, got `ftp`",
    );
    assert_error(&e, 8, 7, "upstreams[1].url", "must not have a ?query");
}

#[test]
fn bad_regex_is_reported_at_its_element() {
    let e = errors_of(&with_upstream(
        "[authz]\nskip_auth_routes = [\n  \"GET=^/ok$\",\n  \"^/(unclosed\",\n]",
    ));
    assert_eq!(e.len(), 1, "{e:?}");
    assert_error(
        &e,
        4,
        3,
        "authz.skip_auth_routes[1]",
        "invalid regex `^/(unclosed`: unclosed group",
    );
    assert!(!e[0].reason.contains('\n'));
}

#[test]
fn short_cookie_secret() {
    let e = errors_with(
        &with_upstream("[session]\ncookie_secret = \"${SHORT}\""),
        &[("SHORT", "AAAAAAAAAAAAAAAAAAAAAA==")],
    );
    assert_error(
        &e,
        2,
        17,
        "session.cookie_secret",
        "must decode to exactly 32 bytes, got 16",
    );
    assert_error(
        &e,
        2,
        17,
        "session.cookie_secret",
        "`linkgate secret` prints",
    );
}

#[test]
fn non_base64_cookie_secret_does_not_echo_the_value() {
    let e = errors_with(
        &with_upstream("[session]\ncookie_secret = \"${BAD}\""),
        &[("BAD", "this is not base64!!")],
    );
    assert_error(&e, 2, 17, "session.cookie_secret", "not valid base64");
    assert!(!e[0].reason.contains("this is not"));
}

#[test]
fn missing_environment_variable() {
    let e = errors_with(
        &with_upstream("[session]\ncookie_secret = \"${LINKGATE_COOKIE_SECRET}\"\ncookie_domain = \"${A}.${B}\""),
        &[("A", "x")],
    );
    assert_error(
        &e,
        2,
        17,
        "session.cookie_secret",
        "environment variable LINKGATE_COOKIE_SECRET is not set",
    );
    assert_error(
        &e,
        3,
        17,
        "session.cookie_domain",
        "environment variable B is not set",
    );
}

#[test]
fn secret_and_secret_file_together() {
    let text = with_upstream(
        "[sso]\npreset = \"adobe-ims\"\nclient_id = \"c\"\nclient_secret = \"${SSO_SECRET}\"\nclient_secret_file = \"/run/secrets/sso\"\n\
         [session]\ncookie_secret = \"${LINKGATE_COOKIE_SECRET}\"",
    );
    let e = errors_with(&text, &sso_env());
    assert_error(
        &e,
        5,
        1,
        "sso.client_secret_file",
        "set either `client_secret` or `client_secret_file`, not both",
    );
}

#[test]
fn unreadable_secret_file_names_the_path() {
    let e = errors_of(&with_upstream(
        "[session]\ncookie_secret_file = \"/nonexistent/linkgate/cookie.key\"",
    ));
    assert_error(
        &e,
        2,
        22,
        "session.cookie_secret_file",
        "cannot read secret file `/nonexistent/linkgate/cookie.key`: No such file",
    );
}

#[test]
fn bad_and_zero_durations() {
    let e = errors_of(&with_upstream(
        "[session]\nttl = \"8 hourz\"\ncache_ttl = \"0s\"\n[[upstreams]]\nname = \"b\"\nurl = \"http://b\"\nhosts = [\"b.example\"]\nconnect_timeout = \"0s\"\nread_timeout = 30",
    ));
    assert_error(&e, 2, 7, "session.ttl", "invalid duration `8 hourz`");
    assert_error(
        &e,
        8,
        19,
        "upstreams[0].connect_timeout",
        "must be greater than zero",
    );
    assert_error(
        &e,
        9,
        16,
        "upstreams[0].read_timeout",
        "expected a duration string",
    );
    // cache_ttl = "0s" is allowed (cache off).
    assert!(!e.iter().any(|x| x.key == "session.cache_ttl"));
}

#[test]
fn samesite_none_needs_secure_cookie() {
    let e = errors_of(&with_upstream(
        "[session]\ncookie_secure = false\ncookie_samesite = \"none\"",
    ));
    assert_error(
        &e,
        3,
        19,
        "session.cookie_samesite",
        "requires cookie_secure = true",
    );
}

#[test]
fn alg_none_and_hmac_are_refused() {
    let text = with_upstream(
        "[sso]\npreset = \"adobe-ims\"\nclient_id = \"c\"\nclient_secret = \"${SSO_SECRET}\"\n\
         id_token_algs = [\"RS256\", \"none\", \"HS256\", \"XY1\"]\n[session]\ncookie_secret = \"${LINKGATE_COOKIE_SECRET}\"",
    );
    let e = errors_with(&text, &sso_env());
    assert_error(
        &e,
        5,
        27,
        "sso.id_token_algs[1]",
        "`none` is refused: unsigned tokens",
    );
    assert_error(
        &e,
        5,
        35,
        "sso.id_token_algs[2]",
        "`HS256` is refused: HMAC",
    );
    assert_error(&e, 5, 44, "sso.id_token_algs[3]", "unknown algorithm `XY1`");
}

#[test]
fn account_keys_for_the_wrong_source() {
    let jwt = with_upstream(&format!(
        "{}[account]\nsource = \"jwt\"\nheader = \"X-Cloud-Token\"\nissuer = \"https://accounts.magento.cloud\"\n\
         audience = [\"linkgate\"]\njwks_url = \"https://accounts.magento.cloud/jwks\"\nclient_id = \"oops\"\n\
         [session]\ncookie_secret = \"${{LINKGATE_COOKIE_SECRET}}\"",
        sso_section()
    ));
    let e = errors_with(&jwt, &sso_env());
    assert_error(
        &e,
        11,
        1,
        "account.client_id",
        "`client_id` is only for source = \"oauth2\"",
    );

    let oauth2 = with_upstream(&format!(
        "{}[account]\nsource = \"oauth2\"\nissuer = \"https://accounts.example\"\nclient_id = \"a\"\nclient_secret = \"${{SSO_SECRET}}\"\n\
         cookie = \"jwt\"\n[session]\ncookie_secret = \"${{LINKGATE_COOKIE_SECRET}}\"",
        sso_section()
    ));
    let e = errors_with(&oauth2, &sso_env());
    assert_error(
        &e,
        10,
        1,
        "account.cookie",
        "`cookie` is only for source = \"jwt\"",
    );
}

#[test]
fn jwt_source_requirements() {
    let text = with_upstream(&format!(
        "{}[account]\nsource = \"jwt\"\ncookie = \"a\"\nheader = \"X-B\"\n[session]\ncookie_secret = \"${{LINKGATE_COOKIE_SECRET}}\"",
        sso_section()
    ));
    let e = errors_with(&text, &sso_env());
    assert_error(
        &e,
        8,
        10,
        "account.header",
        "set either `cookie` or `header`, not both",
    );
    assert_error(&e, 5, 1, "account.issuer", "missing required key");
    assert_error(&e, 5, 1, "account.audience", "missing required key");
    assert_error(&e, 5, 1, "account.jwks_url", "missing required key");
}

#[test]
fn redis_store_without_redis_section() {
    let e = errors_of(&with_upstream("[session]\nstore = \"redis\""));
    assert_error(&e, 2, 9, "session.store", "requires a [redis] section");
}

#[test]
fn missing_upstreams() {
    let e = errors_of("[log]\nlevel = \"debug\"\n");
    assert_error(
        &e,
        1,
        1,
        "upstreams",
        "at least one [[upstreams]] table is required",
    );
}

#[test]
fn duplicate_upstream_names_and_routes() {
    let e = errors_of(&format!(
        "{UPSTREAM}[[upstreams]]\nname = \"app\"\nurl = \"http://127.0.0.1:9\"\npath_prefix = \"/x\"\n\
         [[upstreams]]\nname = \"other\"\nurl = \"http://127.0.0.1:9\"\n"
    ));
    assert_error(
        &e,
        5,
        8,
        "upstreams[1].name",
        "duplicate upstream name `app` (also upstreams[0])",
    );
    assert_error(
        &e,
        8,
        1,
        "upstreams[2]",
        "same hosts and path_prefix as upstream `app` (upstreams[0])",
    );
}

#[test]
fn bad_trusted_proxy_cidr() {
    let e = errors_of(&with_upstream(
        "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"10.0.0.0/33\", \"proxy.local\"]",
    ));
    assert_error(
        &e,
        2,
        34,
        "server.trusted_proxies[1]",
        "invalid CIDR or IP address `10.0.0.0/33`",
    );
    assert_error(
        &e,
        2,
        49,
        "server.trusted_proxies[2]",
        "invalid CIDR or IP address `proxy.local`",
    );
}

#[test]
fn tls_missing_files() {
    let e = errors_of(&with_upstream(
        "[server.tls]\ncert = \"/nonexistent/gate.crt\"\nkey = \"/nonexistent/gate.key\"",
    ));
    assert_error(
        &e,
        2,
        8,
        "server.tls.cert",
        "cannot read certificate file `/nonexistent/gate.crt`",
    );
    assert_error(
        &e,
        3,
        7,
        "server.tls.key",
        "cannot read private key file `/nonexistent/gate.key`",
    );
}

#[test]
fn tls_garbage_files() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("junk.crt");
    let key = dir.path().join("junk.key");
    std::fs::write(&cert, "not a certificate\n").unwrap();
    std::fs::write(
        &key,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let e = errors_of(&with_upstream(&format!(
        "[server.tls]\ncert = \"{}\"\nkey = \"{}\"",
        cert.display(),
        key.display()
    )));
    assert_error(&e, 2, 8, "server.tls.cert", "PEM certificate");
    assert_error(&e, 3, 7, "server.tls.key", "cannot parse PEM private key");
    assert!(e.iter().all(|x| !x.reason.contains('\n')));
}

#[test]
fn tls_key_not_matching_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, _) = self_signed(dir.path(), "one");
    let (_, other_key) = self_signed(dir.path(), "two");
    let e = errors_of(&with_upstream(&format!(
        "[server.tls]\ncert = \"{}\"\nkey = \"{}\"",
        cert.display(),
        other_key.display()
    )));
    assert_eq!(e.len(), 1, "{e:?}");
    assert_error(
        &e,
        3,
        7,
        "server.tls.key",
        "private key does not match the certificate",
    );
}

#[test]
fn sso_requirements() {
    let e = errors_of(&with_upstream(
        "[sso]\nauthorize_url = \"https://id.example/authorize\"\n[session]\ncookie_secret = \"${LINKGATE_COOKIE_SECRET}\"",
    ));
    assert_error(&e, 1, 1, "sso.client_id", "missing required key");
    assert_error(
        &e,
        1,
        1,
        "sso.client_secret",
        "token_auth_method = \"none\"",
    );
    assert_error(&e, 1, 1, "sso", "missing: token_url, jwks_url");

    // [sso] without any cookie secret.
    let e = errors_with(
        &with_upstream(
            "[sso]\npreset = \"adobe-ims\"\nclient_id = \"c\"\ntoken_auth_method = \"none\"",
        ),
        &[],
    );
    assert_error(
        &e,
        1,
        1,
        "session.cookie_secret",
        "`linkgate secret` prints one",
    );
}

#[test]
fn redirect_path_must_be_under_the_prefix() {
    let e = errors_with(
        &with_upstream(&format!(
            "{}redirect_path = \"/callback\"\n[session]\ncookie_secret = \"${{LINKGATE_COOKIE_SECRET}}\"",
            sso_section()
        )),
        &sso_env(),
    );
    assert_error(
        &e,
        5,
        17,
        "sso.redirect_path",
        "must be under server.proxy_prefix",
    );
}

#[test]
fn reserved_auth_params_are_refused() {
    let e = errors_with(
        &with_upstream(&format!(
            "{}[sso.extra_auth_params]\nprompt = \"login\"\nredirect_uri = \"https://evil.example\"\n[session]\ncookie_secret = \"${{LINKGATE_COOKIE_SECRET}}\"",
            sso_section()
        )),
        &sso_env(),
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert_error(
        &e,
        7,
        1,
        "sso.extra_auth_params.redirect_uri",
        "set by linkgate",
    );
}

#[test]
fn redis_mode_requirements() {
    let e = errors_of(&with_upstream(
        "[redis]\nmode = \"sentinel\"\nurl = \"redis://127.0.0.1\"\nnodes = [\"s1:26379\", \"nope\"]",
    ));
    assert_error(
        &e,
        2,
        8,
        "redis.mode",
        "mode = \"sentinel\" requires `sentinel_master`",
    );
    assert_error(
        &e,
        3,
        1,
        "redis.url",
        "`url` is only for mode = \"standalone\"",
    );
    assert_error(&e, 4, 22, "redis.nodes[1]", "invalid node `nope`");

    let e = errors_of(&with_upstream("[redis]\nkey_prefix = \"lg:\""));
    assert_error(
        &e,
        1,
        1,
        "redis.url",
        "mode = \"standalone\" requires `url`",
    );

    let e = errors_of(&with_upstream("[redis]\nurl = \"http://127.0.0.1:6379\""));
    assert_error(
        &e,
        2,
        7,
        "redis.url",
        "URL scheme must be redis or rediss or redis+unix",
    );
}

#[test]
fn type_mismatches_and_ranges() {
    let e = errors_of(&with_upstream(
        "[server]\nlisten = 4180\nthreads = 0\nproxy_prefix = \"/oauth2/\"\n[headers]\npass_user_headers = \"yes\"",
    ));
    assert_error(
        &e,
        2,
        10,
        "server.listen",
        "expected a string, found integer",
    );
    assert_error(
        &e,
        3,
        11,
        "server.threads",
        "must be between 1 and 1024, got 0",
    );
    assert_error(&e, 4, 16, "server.proxy_prefix", "must not end with `/`");
    assert_error(
        &e,
        6,
        21,
        "headers.pass_user_headers",
        "expected true or false, found `yes`",
    );
}

#[test]
fn every_error_in_one_pass_in_file_order() {
    let errs = parse_with(
        "[server]\nlisten = \"nope\"\n[session]\nttl = \"forever\"\ncookie_samesite = \"sideways\"\n[log]\nformat = \"xml\"\nbogus = 1\n",
        &[],
    )
    .unwrap_err();
    let lines: Vec<String> = errs.errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [
            "test.toml:1:1: upstreams: at least one [[upstreams]] table is required",
            "test.toml:2:10: server.listen: invalid socket address `nope`; expected IP:PORT such as \"0.0.0.0:4180\" or \"[::1]:4180\"",
            "test.toml:4:7: session.ttl: invalid duration `forever`: expected number at 0 (examples: \"500ms\", \"30s\", \"8h\")",
            "test.toml:5:19: session.cookie_samesite: unknown value `sideways`; expected one of \"lax\", \"strict\", \"none\"",
            "test.toml:7:10: log.format: unknown value `xml`; expected one of \"text\", \"json\"",
            "test.toml:8:1: log.bogus: unknown key; allowed keys: level, format",
        ]
    );
    // Display is one line per error.
    assert_eq!(errs.to_string().lines().count(), 6);
}

#[test]
fn templates_dir_must_exist() {
    let e = errors_of(&with_upstream(
        "[pages]\ntemplates_dir = \"/nonexistent/templates\"",
    ));
    assert_error(
        &e,
        2,
        17,
        "pages.templates_dir",
        "is not an existing directory",
    );
}

#[test]
fn single_bracket_upstreams_table_is_explained() {
    let e = errors_of("[upstreams]\nname = \"app\"\nurl = \"http://127.0.0.1:8080\"\n");
    assert_error(
        &e,
        1,
        1,
        "upstreams",
        "write [[upstreams]] with double brackets",
    );
}

#[test]
fn pages_language_is_checked_against_the_catalogues() {
    let c = parse_ok(&with_upstream(
        "[pages]\nlanguage = \"sv\"\nlanguages = [\"sv\", \"en\"]",
    ));
    assert_eq!(c.pages.language, "sv");
    assert_eq!(c.pages.languages, ["sv", "en"]);
    let c = parse_ok(&with_upstream(""));
    assert_eq!(c.pages.language, "en");
    assert!(c.pages.languages.is_empty(), "every catalogue is offered");
    let e = errors_of(&with_upstream("[pages]\nlanguage = \"xx\""));
    assert_error(
        &e,
        2,
        12,
        "pages.language",
        "unknown language `xx`; expected one of \"en\", \"sv\"",
    );
    let e = errors_of(&with_upstream("[pages]\nlanguages = [\"en\", \"de\"]"));
    assert_error(&e, 2, 20, "pages.languages[1]", "unknown language `de`");
    let e = errors_of(&with_upstream(
        "[pages]\nlanguage = \"sv\"\nlanguages = [\"en\"]",
    ));
    assert_error(
        &e,
        3,
        14,
        "pages.languages[0]",
        "must include the default language `sv`",
    );
}

#[test]
fn an_operator_catalogue_brings_its_language() {
    let dir = tempfile::tempdir().unwrap();
    let english = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src/pages/catalogue/en.toml"),
    )
    .unwrap();
    std::fs::write(dir.path().join("de.toml"), &english).unwrap();
    let text = with_upstream(&format!(
        "[pages]\ncatalogue_dir = \"{}\"\nlanguage = \"de\"",
        dir.path().display()
    ));
    assert_eq!(parse_ok(&text).pages.language, "de");
    std::fs::write(dir.path().join("de.toml"), "[account]\ntitle = \"Konto\"\n").unwrap();
    let e = errors_of(&text);
    assert_error(&e, 2, 17, "pages.catalogue_dir", "every key");
}
