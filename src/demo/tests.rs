use super::*;

#[test]
fn the_demo_configuration_passes_the_operators_validation() {
    let opts = DemoOptions::default();
    let config = config(&opts, &Secrets::random()).expect("valid");
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:4180");
    assert_eq!(config.session.store.as_str(), "memory");
    assert!(!config.session.cookie_secure);
    assert_eq!(config.link.mode.as_str(), "enforce");
    let sso = config.sso.expect("sso");
    assert_eq!(sso.issuer.as_deref(), Some("http://127.0.0.1:4181"));
    assert_eq!(sso.redirect_path, "/oauth2/callback");
}

#[test]
fn the_configuration_text_holds_no_secret() {
    let secrets = Secrets::random();
    let text = config_text(&DemoOptions::default());
    assert!(!text.contains(secrets.cookie.expose().as_str()));
    assert!(text.contains("${DEMO_COOKIE_SECRET}"));
}

#[test]
fn ports_must_differ_and_not_be_zero() {
    let twice = DemoOptions {
        app_port: 4181,
        ..DemoOptions::default()
    };
    assert_eq!(
        check_ports(&twice),
        Err(PortError::Twice {
            port: 4181,
            first: "--sso-port",
            second: "--app-port"
        })
    );
    let zero = DemoOptions {
        admin_port: 0,
        ..DemoOptions::default()
    };
    assert_eq!(
        check_ports(&zero),
        Err(PortError::Zero {
            flag: "--admin-port"
        })
    );
}

#[test]
fn a_taken_port_names_its_flag() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let free = |n: u16| {
        TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(40000 + n)
    };
    let opts = DemoOptions {
        port: free(0),
        sso_port: free(1),
        accounts_port: port,
        app_port: free(3),
        admin_port: free(4),
    };
    let e = check_ports(&opts).expect_err("taken").to_string();
    assert!(e.contains(&format!("port {port}")), "{e}");
    assert!(e.contains("--accounts-port"), "{e}");
}
