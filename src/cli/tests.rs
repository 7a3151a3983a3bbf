//! Parsing of flags and environment variables into the configuration.

use super::*;
use clap::CommandFactory;

#[test]
fn cli_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn flags_parse_into_config() {
    let cli = Cli::parse_from([
        "sluicegate",
        "standalone",
        "--config",
        "/etc/sg",
        "--workers",
        "3",
        "--connect-timeout",
        "250ms",
        "--http-addr",
        "127.0.0.1:18080",
    ]);
    let Command::Standalone { config, gateway } = cli.command else {
        panic!("expected standalone");
    };
    assert_eq!(config, PathBuf::from("/etc/sg"));
    let cfg = gateway.config();
    assert_eq!(cfg.workers, 3);
    assert_eq!(
        cfg.proxy.connect_timeout,
        std::time::Duration::from_millis(250)
    );
    assert_eq!(cfg.http_addr.port(), 18080);
    assert_eq!(cfg.https_addr, Some("0.0.0.0:8443".parse().unwrap()));
    assert_eq!(cfg.dns.server, None);
    let cli = Cli::parse_from([
        "sluicegate",
        "standalone",
        "--config",
        "d",
        "--https-addr",
        "off",
    ]);
    let Command::Standalone { gateway, .. } = cli.command else {
        panic!("expected standalone");
    };
    assert_eq!(gateway.config().https_addr, None);
    for (flag, want) in [("127.0.0.1:5353", "127.0.0.1:5353"), ("::1", "[::1]:53")] {
        let cli = Cli::parse_from([
            "sluicegate",
            "standalone",
            "--config",
            "d",
            "--dns-server",
            flag,
        ]);
        let Command::Standalone { gateway, .. } = cli.command else {
            panic!("expected standalone");
        };
        assert_eq!(gateway.config().dns.server, Some(want.parse().unwrap()));
    }
    assert!(
        Cli::try_parse_from([
            "sluicegate",
            "standalone",
            "--config",
            "d",
            "--dns-server",
            "dns.local"
        ])
        .is_err()
    );
}

#[test]
fn http3_is_off_unless_asked_for() {
    let parse = |extra: &[&str]| {
        let mut args = vec!["sluicegate", "standalone", "--config", "d"];
        args.extend_from_slice(extra);
        let Command::Standalone { gateway, .. } = Cli::parse_from(args).command else {
            panic!("expected standalone");
        };
        gateway.config().proxy.http3
    };
    assert!(parse(&[]).is_none());
    let on = parse(&["--http3"]).expect("on");
    assert_eq!((on.max_streams, on.max_connections), (128, 10_000));
    let on = parse(&[
        "--http3",
        "--http3-max-streams",
        "8",
        "--http3-max-connections",
        "0",
    ])
    .expect("on");
    // Zero would refuse everything: at least one.
    assert_eq!((on.max_streams, on.max_connections), (8, 1));
    assert!(parse(&["--http3-max-streams", "8"]).is_none());
}

#[test]
fn admin_token_and_explain_flags() {
    let cli = Cli::parse_from([
        "sluicegate",
        "standalone",
        "--config",
        "d",
        "--admin-token",
        "t0ken",
    ]);
    let Command::Standalone { gateway, .. } = cli.command else {
        panic!("expected standalone");
    };
    assert!(gateway.config().admin.token.is_some());
    assert!(
        Cli::try_parse_from([
            "sluicegate",
            "standalone",
            "--config",
            "d",
            "--admin-token",
            " "
        ])
        .is_err()
    );
    let cli = Cli::parse_from([
        "sluicegate",
        "explain",
        "--host",
        "shop.example.com",
        "--path",
        "/api?x=1",
        "--method",
        "post",
        "--header",
        "x-canary=1",
        "--header",
        "cookie: a=b",
        "--config",
        "dir",
    ]);
    let Command::Explain(args) = cli.command else {
        panic!("expected explain");
    };
    let req = args.request().unwrap();
    assert_eq!(req.method, http::Method::POST);
    assert_eq!(req.headers["x-canary"], "1");
    assert_eq!(req.headers["cookie"], "a=b");
    assert!(matches!(args.target(), Target::Config { .. }));
    for bad in [
        &["--host", "h", "--path", "/"][..],
        &[
            "--host", "h", "--path", "/", "--config", "d", "--admin", "u",
        ],
    ] {
        let mut argv = vec!["sluicegate", "explain"];
        argv.extend_from_slice(bad);
        assert!(Cli::try_parse_from(argv).is_err(), "{bad:?}");
    }
}

#[test]
fn controller_flags() {
    let cli = Cli::parse_from([
        "sluicegate",
        "controller",
        "--watch-namespace",
        "b,a",
        "--watch-namespace",
        "a",
        "--publish-service",
        "ingress/sluicegate",
        "--pod-name",
        "sg-0",
        "--pod-namespace",
        "ingress",
        "--lease-duration",
        "20s",
    ]);
    let Command::Controller { kube, gateway } = cli.command else {
        panic!("expected controller");
    };
    let cfg = kube.config(gateway.config(), "elsewhere").unwrap();
    assert_eq!(cfg.scope.namespaces, ["a", "b"]);
    assert_eq!(cfg.scope.retry_max, std::time::Duration::from_secs(5));
    assert!(
        matches!(cfg.publish, Publish::Service(ref ns, ref n) if ns == "ingress" && n == "sluicegate")
    );
    let lease = cfg.lease.unwrap();
    assert_eq!(
        (lease.namespace.as_str(), lease.identity.as_str()),
        ("ingress", "sg-0")
    );
    assert_eq!(lease.lease_duration, std::time::Duration::from_secs(20));
}

#[test]
fn the_lease_goes_to_the_clients_namespace_unless_told() {
    let lease_ns = |args: &[&str]| {
        let mut argv = vec!["sluicegate", "controller", "--pod-name", "sg-0"];
        argv.extend_from_slice(args);
        let Command::Controller { kube, gateway } = Cli::parse_from(argv).command else {
            panic!("expected controller");
        };
        kube.config(gateway.config(), "from-kubeconfig")
            .unwrap()
            .lease
            .unwrap()
            .namespace
    };
    assert_eq!(lease_ns(&[]), "from-kubeconfig");
    assert_eq!(lease_ns(&["--pod-namespace", ""]), "from-kubeconfig");
    assert_eq!(lease_ns(&["--pod-namespace", "pods"]), "pods");
    assert_eq!(
        lease_ns(&[
            "--pod-namespace",
            "pods",
            "--leader-election-namespace",
            "leases"
        ]),
        "leases"
    );
}

#[test]
fn bad_controller_flags_are_refused() {
    for args in [
        &["--publish-service", "no-slash"][..],
        &["--publish-service", "a/b", "--publish-address", "1.2.3.4"],
    ] {
        let mut argv = vec!["sluicegate", "controller"];
        argv.extend_from_slice(args);
        assert!(Cli::try_parse_from(argv).is_err(), "{args:?}");
    }
    let cli = Cli::parse_from([
        "sluicegate",
        "controller",
        "--renew-deadline",
        "20s",
        "--pod-name",
        "x",
    ]);
    let Command::Controller { kube, gateway } = cli.command else {
        panic!("expected controller");
    };
    let err = kube.config(gateway.config(), "x").unwrap_err().to_string();
    assert!(err.contains("--renew-deadline"), "{err}");
}
