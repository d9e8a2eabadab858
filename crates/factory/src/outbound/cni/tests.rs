use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use super::*;

fn network(subnet: &str) -> Result<CniNetwork, CniError> {
    CniNetwork::new(CniConfig {
        bin_dir: PathBuf::from("/usr/lib/cni"),
        bridge: "cf0".to_owned(),
        subnet: subnet.to_owned(),
        state_dir: PathBuf::from("/var/lib/cf/cni"),
    })
}

fn port(host_port: u16, host_ip: [u8; 4]) -> PortMap {
    PortMap {
        host_port,
        container_port: 80,
        protocol: "tcp",
        host_ip: Ipv4Addr::from(host_ip),
    }
}

fn failed(code: i32, stdout: &str, stderr: &str) -> Output {
    Output {
        status: ExitStatus::from_raw(code << 8),
        stdout: stdout.as_bytes().to_vec(),
        stderr: stderr.as_bytes().to_vec(),
    }
}

#[test]
fn builds_bridge_then_portmap_chain() {
    let net = network("10.231.17.0/24").expect("valid config");
    let [bridge, portmap] = &net.plugins[..] else {
        panic!("expected two plugins");
    };

    assert_eq!(bridge.kind, "bridge");
    assert_eq!(
        bridge.conf,
        json!({
            "type": "bridge", "bridge": "cf0", "isGateway": true,
            "ipMasq": true, "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{
                    "subnet": "10.231.17.0/24", "gateway": "10.231.17.1"
                }]],
                "routes": [{ "dst": "0.0.0.0/0" }],
                "dataDir": "/var/lib/cf/cni/ipam",
            },
        })
    );
    assert_eq!(portmap.kind, "portmap");
    assert_eq!(
        portmap.conf,
        json!({
            "type": "portmap",
            "capabilities": { "portMappings": true },
            "snat": true,
        })
    );
}

#[test]
fn injects_name_version_and_prev_result() {
    let net = network("10.231.17.0/24").expect("valid config");
    let prev = json!({ "cniVersion": "1.0.0", "ips": [] });

    let first = net.plugins[0].stdin_conf(None, &json!({}));
    let second = net.plugins[1].stdin_conf(Some(&prev), &json!({}));

    assert_eq!(first["name"], "cf-net");
    assert_eq!(first["cniVersion"], "1.0.0");
    assert!(first.get("prevResult").is_none());
    assert_eq!(second["prevResult"], prev);
}

#[test]
fn runtime_config_goes_only_to_capable_plugins() {
    let net = network("10.231.17.0/24").expect("valid config");
    let runtime = runtime_config(&[port(8080, [0, 0, 0, 0])]).expect("valid");

    let bridge = net.plugins[0].stdin_conf(None, &runtime);
    let portmap = net.plugins[1].stdin_conf(None, &runtime);

    assert!(bridge.get("runtimeConfig").is_none());
    assert_eq!(
        portmap["runtimeConfig"],
        json!({ "portMappings": [
            { "hostPort": 8080, "containerPort": 80, "protocol": "tcp" }
        ]})
    );
}

#[test]
fn no_ports_means_no_runtime_config() {
    let net = network("10.231.17.0/24").expect("valid config");
    let runtime = runtime_config(&[]).expect("valid");

    let portmap = net.plugins[1].stdin_conf(None, &runtime);

    assert!(portmap.get("runtimeConfig").is_none());
}

#[test]
fn host_ip_is_sent_only_when_specific() {
    let runtime = runtime_config(&[port(8080, [127, 0, 0, 1])]).expect("valid");

    assert_eq!(runtime["portMappings"][0]["hostIP"], "127.0.0.1");
}

#[test]
fn rejects_bad_port_maps() {
    let mut sctp = port(8080, [0, 0, 0, 0]);
    sctp.protocol = "sctp";

    for bad in [sctp, port(0, [0, 0, 0, 0])] {
        let err = runtime_config(&[bad]).expect_err("must be rejected");
        assert!(matches!(err, CniError::InvalidPortMap { .. }), "{bad:?}");
    }
}

#[test]
fn validates_subnets() {
    let good = ["10.231.17.0/24", "10.0.0.0/8", "192.168.7.252/30"];
    let bad = [
        "10.231.17.1/24",
        "10.0.0.0/7",
        "10.0.0.0/31",
        "10.0.0.0/32",
        "10.0.0.0",
        "10.0.0.0/",
        "10.0.0.0/x",
        "010.0.0.0/24",
        " 10.0.0.0/24",
        "fd00::/64",
        "",
    ];

    for subnet in good {
        assert!(network(subnet).is_ok(), "{subnet} should be accepted");
    }
    for subnet in bad {
        let err = network(subnet).err();
        assert!(
            matches!(err, Some(CniError::Config { .. })),
            "{subnet:?} should be rejected"
        );
    }
}

#[test]
fn gateway_is_first_host_of_subnet() {
    let cases = [
        ("10.231.17.0/24", [10, 231, 17, 1]),
        ("10.8.0.0/16", [10, 8, 0, 1]),
        ("192.168.7.252/30", [192, 168, 7, 253]),
    ];

    for (subnet, gateway) in cases {
        let net = network(subnet).expect("valid config");
        assert_eq!(net.gateway(), Ipv4Addr::from(gateway), "{subnet}");
    }
}

#[test]
fn rejects_bad_bridge_names_and_relative_dirs() {
    for bridge in ["", "sixteen-chars-xx", "cf/0", "cf 0"] {
        let cfg = CniConfig {
            bin_dir: PathBuf::from("/usr/lib/cni"),
            bridge: bridge.to_owned(),
            subnet: "10.231.17.0/24".to_owned(),
            state_dir: PathBuf::from("state"),
        };
        assert!(matches!(CniNetwork::new(cfg), Err(CniError::Config { .. })));
    }
}

#[test]
fn rejects_names_unsafe_as_file_names() {
    for name in ["", "../etc", "a/b", ".hidden", "-x", "a b"] {
        assert!(validate_name(name).is_err(), "{name:?}");
    }
    assert!(validate_name("abc-1_2.3").is_ok());
}

#[test]
fn parses_cni_error_object() {
    let stdout = r#"{"cniVersion":"1.0.0","code":11,
        "msg":"failed to allocate","details":"range is full"}"#;

    let err = plugin_error("bridge", Verb::Add, &failed(1, stdout, "noise"));

    let CniError::Plugin {
        plugin,
        command,
        code,
        msg,
    } = err
    else {
        panic!("expected a plugin error");
    };
    assert_eq!((plugin.as_str(), command), ("bridge", "ADD"));
    assert_eq!(code, Some(11));
    assert_eq!(msg, "failed to allocate; range is full");
}

#[test]
fn falls_back_to_stderr_then_exit_status() {
    let from_stderr = plugin_error("portmap", Verb::Del, &failed(2, "", " boom\n"));
    let from_status = plugin_error("portmap", Verb::Del, &failed(2, "", ""));

    assert!(matches!(
        from_stderr,
        CniError::Plugin { code: None, ref msg, .. } if msg == "boom"
    ));
    assert!(matches!(
        from_status,
        CniError::Plugin { ref msg, .. } if msg.contains("exit status: 2")
    ));
}

#[test]
fn finds_container_address_on_eth0() {
    let result = json!({
        "cniVersion": "1.0.0",
        "interfaces": [
            { "name": "cf0", "mac": "aa:bb:cc:dd:ee:01" },
            { "name": "veth1", "mac": "aa:bb:cc:dd:ee:02" },
            { "name": "eth0", "mac": "aa:bb:cc:dd:ee:03",
              "sandbox": "/run/netns/c1" },
        ],
        "ips": [
            { "interface": 0, "address": "10.9.9.9/24" },
            { "interface": 2, "address": "fd00::2/64" },
            { "interface": 2, "address": "10.231.17.2/24",
              "gateway": "10.231.17.1" },
        ],
    });

    assert_eq!(container_ipv4(&result), Some(Ipv4Addr::new(10, 231, 17, 2)));
    assert_eq!(container_ipv4(&json!({ "ips": [] })), None);
}
