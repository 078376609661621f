//! Checks of what users apply (issue 9), run by `cargo test`:
//!
//! - every Envoy config that can be checked goes through the real
//!   `envoy --mode validate` with the real filter, which runs the filter's
//!   `on_configure` and so refuses a bad plugin configuration. The Istio
//!   `EnvoyFilter`s are checked by rendering their patches into
//!   `envoy/envoy.yaml` ([`render_envoy_filter`]), the `WasmPlugin` by putting
//!   its `pluginConfig` where Istio puts it (a JSON StringValue);
//! - the Istio and Kubernetes manifests parse as YAML with the expected kinds
//!   and the fields Warrant depends on, including the facts that tie them
//!   together (labels, the sidecar's port, the audit cluster's name);
//! - the two Dockerfiles say what the README says they do.
//!
//! Each structural check is a function returning the first problem, and a
//! table of broken copies shows that it finds each one.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use serde_yaml::{Mapping, Value};
use warrant_e2e::envoy::validate;

const WASM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
const STRING_VALUE_TYPE: &str = "type.googleapis.com/google.protobuf.StringValue";
const AUDIT_LISTEN: &str = "127.0.0.1:50051";

// ---------------------------------------------------------------------------
// envoy --mode validate

#[test]
fn inbound_envoy_filter_rendered_into_envoy_yaml_validates() {
    let rendered = render_envoy_filter(&envoy_filter("envoy/istio/warrant-inbound.yaml"));
    assert_validates(&rendered, "warrant-inbound");
}

#[test]
fn outbound_envoy_filter_rendered_into_envoy_yaml_validates() {
    let rendered = render_envoy_filter(&envoy_filter("envoy/istio/warrant-outbound.yaml"));
    assert_validates(&rendered, "warrant-outbound");
}

#[test]
fn wasm_plugin_config_validates_where_istio_puts_it() {
    let plugin = wasm_plugin();
    let json = serde_json::to_string(&yaml_to_json(&plugin["spec"]["pluginConfig"])).unwrap();
    let mut base = base_config();
    set_plugin_configuration(&mut base, &json);
    assert_validates(&base, "wasmplugin");
}

/// The bench's configurations are the shipped config with the filter taken
/// out (baseline) or swapped for the floor filter; both must stay loadable
/// as `envoy/envoy.yaml` changes.
#[test]
fn bench_baseline_and_floor_configs_validate() {
    use warrant_e2e::bench::{render, Setup};
    let dir = tempfile::tempdir().unwrap();
    let ports = warrant_e2e::envoy::Ports { audit: 1, upstream: 1 };
    for (setup, module) in [(Setup::Baseline, None), (Setup::Floor, Some("warrant_floor_filter"))] {
        let out = dir.path().join(format!("{setup:?}.yaml"));
        render(setup, &out, ports, &|_| {});
        let text = std::fs::read_to_string(&out).unwrap();
        assert!(!text.contains("warrant_filter.wasm"), "{setup:?}: Warrant left in");
        assert_eq!(module.is_some_and(|m| text.contains(m)), module.is_some(), "{setup:?}");
        let (ok, output) = validate(&out);
        assert!(ok, "{setup:?}: {output}");
    }
}

#[test]
fn rendered_envoy_filter_with_a_bad_plugin_config_is_refused_naming_the_field() {
    let mut doc = envoy_filter("envoy/istio/warrant-inbound.yaml");
    let extension = patches_mut(&mut doc, "EXTENSION_CONFIG").remove(0);
    let value = &mut extension["patch"]["value"]["typed_config"]["config"]["configuration"];
    let mut json: serde_json::Value =
        serde_json::from_str(value["value"].as_str().unwrap()).unwrap();
    json["identity"]["sources"] = serde_json::json!(["envelope", "dns"]);
    value["value"] = json.to_string().into();

    let (ok, output) = validate_doc(&render_envoy_filter(&doc), "bad-inbound");
    assert!(!ok, "a bad plugin config in the EnvoyFilter must fail validation");
    assert!(output.contains("field `identity.sources[1]`"), "{output}");
}

#[test]
fn audit_mode_buffer_and_facts_are_checked_at_load_naming_the_field() {
    let mut base = base_config();
    set_plugin_configuration(&mut base, r#"{"audit": {"mode": "async", "buffer_records": 64}}"#);
    assert_validates(&base, "audit-async");
    for (name, json, field) in [
        ("audit-mode", r#"{"audit": {"mode": "later"}}"#, "field `audit.mode`"),
        ("audit-buffer", r#"{"audit": {"buffer_records": 0}}"#, "field `audit.buffer_records`"),
        ("facts", r#"{"facts": ["sender", "root"]}"#, "field `facts[1]`"),
    ] {
        let mut base = base_config();
        set_plugin_configuration(&mut base, json);
        let (ok, output) = validate_doc(&base, name);
        assert!(!ok, "{name}: must be refused");
        assert!(output.contains(field), "{name}: {output}");
    }
}

#[test]
fn rendered_envoy_filter_with_an_unknown_wasm_field_is_refused() {
    let mut doc = envoy_filter("envoy/istio/warrant-inbound.yaml");
    let extension = patches_mut(&mut doc, "EXTENSION_CONFIG").remove(0);
    let config = extension["patch"]["value"]["typed_config"]["config"].as_mapping_mut().unwrap();
    let flag = config.remove("allow_on_headers_stop_iteration").unwrap();
    config.insert("allow_on_header_stop_iteration".into(), flag);

    let (ok, output) = validate_doc(&render_envoy_filter(&doc), "typo-inbound");
    assert!(!ok, "a misspelt Wasm field must fail validation");
    // protobuf's JSON parser pads its messages with a varying number of
    // spaces, so compare with runs of whitespace collapsed.
    let collapsed = output.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(collapsed.contains("no such field: 'allow_on_header_stop_iteration'"), "{output}");
}

#[test]
fn readme_documents_every_field_the_filter_accepts() {
    // The filter itself is the source of truth: an unknown field at each
    // level makes it list the fields it accepts there, which the README's
    // reference must name in the form given.
    let levels: &[(&str, &str, &str)] = &[
        ("top level", r#"{"zzz": 1}"#, "`{}"),
        ("audit", r#"{"audit": {"zzz": 1}}"#, "`audit.{}`"),
        ("identity", r#"{"identity": {"zzz": 1}}"#, "| `{}"),
        ("recipient", r#"{"recipient": {"zzz": 1}}"#, "`recipient.{}`"),
        ("delegation", r#"{"delegation": {"zzz": 1}}"#, "| `{}"),
        (
            "delegation agent",
            r#"{"delegation": {"agents": {"a": {"zzz": 1}}}}"#,
            "`agents.<name>.{}`",
        ),
        ("sessions", r#"{"sessions": {"zzz": 1}}"#, "| `{}"),
        ("replay", r#"{"replay": {"zzz": 1}}"#, "`replay.{}`"),
        ("agent", r#"{"agents": {"a": {"zzz": 1}}}"#, "`agents.<name>.{}`"),
    ];
    let readme = std::fs::read_to_string(path("envoy/README.md")).unwrap();
    let outputs: Vec<(String, String)> = std::thread::scope(|scope| {
        let runs: Vec<_> = levels
            .iter()
            .map(|(level, json, _)| {
                scope.spawn(move || {
                    let mut base = base_config();
                    set_plugin_configuration(&mut base, json);
                    let (ok, output) = validate_doc(&base, &level.replace(' ', "-"));
                    assert!(!ok, "{level}: an unknown field must be refused");
                    (level.to_string(), output)
                })
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    for ((level, output), (_, _, form)) in outputs.iter().zip(levels) {
        let fields = accepted_fields(output);
        assert!(!fields.is_empty(), "{level}: no field list in:\n{output}");
        for field in fields {
            let wanted = form.replace("{}", &field);
            assert!(
                readme.contains(&wanted),
                "envoy/README.md does not document {wanted} ({level})"
            );
        }
    }
}

#[test]
fn envoy_yaml_leaves_the_filter_its_body_limit() {
    let doc = base_config();
    let listener = &doc["static_resources"]["listeners"][0];
    let read = listener["per_connection_buffer_limit_bytes"].as_u64().unwrap_or(1 << 20);
    let hosts = listener["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]
        ["virtual_hosts"]
        .as_sequence()
        .unwrap();
    let plugin: serde_json::Value = serde_json::from_str(
        wasm_filter_config(&mut doc.clone())["configuration"]["value"].as_str().unwrap(),
    )
    .unwrap();
    let max_body = plugin["max_body_bytes"].as_u64().unwrap_or(1 << 20);
    for host in hosts {
        let limit = host["request_body_buffer_limit"].as_u64();
        check_body_room(limit, max_body, read)
            .unwrap_or_else(|e| panic!("virtual host {:?}: {e}", host["name"]));
    }
    assert!(check_body_room(Some(2 << 20), 1 << 20, 1 << 20).is_err());
    assert!(check_body_room(None, 1 << 20, 1 << 20).is_err());
}

// ---------------------------------------------------------------------------
// EnvoyFilter structure

#[test]
fn envoy_filters_install_warrant_fail_closed_with_its_cluster() {
    for path in ["envoy/istio/warrant-inbound.yaml", "envoy/istio/warrant-outbound.yaml"] {
        check_envoy_filter(&envoy_filter(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    }
}

#[test]
fn envoy_filter_check_finds_each_broken_copy() {
    type Break = fn(&mut Value);
    let cases: &[(&str, Break, &str)] = &[
        (
            "flag off",
            |d| extension_config(d)["allow_on_headers_stop_iteration"] = false.into(),
            "allow_on_headers_stop_iteration",
        ),
        (
            "fail open",
            |d| extension_config(d)["failure_policy"] = "FAIL_OPEN".into(),
            "failure_policy",
        ),
        (
            "legacy fail_open",
            |d| {
                let config = extension_config(d).as_mapping_mut().unwrap();
                config.remove("failure_policy");
                config.insert("fail_open".into(), true.into());
            },
            "failure_policy",
        ),
        (
            "Struct config",
            |d| {
                extension_config(d)["configuration"]["@type"] =
                    "type.googleapis.com/google.protobuf.Struct".into()
            },
            "StringValue",
        ),
        (
            "not V8",
            |d| extension_config(d)["vm_config"]["runtime"] = "envoy.wasm.runtime.wamr".into(),
            "runtime",
        ),
        (
            "no OCI module",
            |d| {
                extension_config(d)["vm_config"]["code"]["remote"]["http_uri"]["uri"] =
                    "https://example.com/warrant.wasm".into()
            },
            "oci://",
        ),
        (
            "cluster renamed",
            |d| patches_mut(d, "CLUSTER").remove(0)["patch"]["value"]["name"] = "audit".into(),
            "audit.cluster",
        ),
        (
            "cluster without HTTP/2",
            |d| {
                patches_mut(d, "CLUSTER").remove(0)["patch"]["value"]
                    .as_mapping_mut()
                    .unwrap()
                    .remove("typed_extension_protocol_options");
            },
            "HTTP/2",
        ),
        (
            "cluster on another port",
            |d| {
                let cluster = &mut patches_mut(d, "CLUSTER").remove(0)["patch"]["value"];
                cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
                    ["address"]["socket_address"]["port_value"] = 50052.into();
            },
            AUDIT_LISTEN,
        ),
        (
            "filter names another extension",
            |d| patches_mut(d, "HTTP_FILTER").remove(0)["patch"]["value"]["name"] = "other".into(),
            "config_discovery",
        ),
        (
            "inserted after the router",
            |d| {
                patches_mut(d, "HTTP_FILTER").remove(0)["patch"]["operation"] =
                    "INSERT_AFTER".into()
            },
            "INSERT_BEFORE",
        ),
        (
            "anchored on a filter that may be absent",
            |d| {
                patches_mut(d, "HTTP_FILTER").remove(0)["match"]["listener"]["filterChain"]
                    ["filter"]["subFilter"]["name"] = "envoy.filters.http.rbac".into()
            },
            "envoy.filters.http.router",
        ),
        (
            "no room for the held body",
            |d| {
                let list = d["spec"]["configPatches"].as_sequence_mut().unwrap();
                list.retain(|p| p["applyTo"] != "VIRTUAL_HOST");
            },
            "request_body_buffer_limit must be set",
        ),
        (
            "room for the filter's limit only",
            |d| {
                patches_mut(d, "VIRTUAL_HOST").remove(0)["patch"]["value"]
                    ["request_body_buffer_limit"] = 1_048_576.into();
            },
            "must be at least",
        ),
        (
            "no workload selector",
            |d| {
                d["spec"].as_mapping_mut().unwrap().remove("workloadSelector");
            },
            "workloadSelector",
        ),
    ];
    for (name, breaks, expected) in cases {
        let mut doc = envoy_filter("envoy/istio/warrant-inbound.yaml");
        breaks(&mut doc);
        match check_envoy_filter(&doc) {
            Ok(()) => panic!("case {name}: the check passed a broken EnvoyFilter"),
            Err(e) => assert!(e.contains(expected), "case {name}: {e}"),
        }
    }
}

#[test]
fn wasm_plugin_matches_the_inbound_envoy_filter_and_never_fails_open() {
    let plugin = wasm_plugin();
    assert_eq!(plugin["apiVersion"], "extensions.istio.io/v1alpha1");
    let spec = &plugin["spec"];
    assert_eq!(spec["failStrategy"], "FAIL_CLOSE");
    assert_eq!(spec["type"], "HTTP");
    assert_eq!(spec["pluginName"], "warrant");
    assert_eq!(spec["phase"], "UNSPECIFIED_PHASE", "see the comment on phase");
    assert!(spec["url"].as_str().unwrap().starts_with("oci://"), "{:?}", spec["url"]);

    let inbound = envoy_filter("envoy/istio/warrant-inbound.yaml");
    assert_eq!(
        yaml_to_json(&spec["pluginConfig"]),
        plugin_config(&inbound),
        "WasmPlugin.pluginConfig must be warrant-inbound.yaml's plugin config"
    );
    assert_eq!(
        spec["selector"]["matchLabels"], inbound["spec"]["workloadSelector"]["labels"],
        "both must select the same pods"
    );

    let cluster_filter = documents("envoy/istio/wasmplugin.yaml").remove(1);
    assert_eq!(cluster_filter["kind"], "EnvoyFilter");
    assert_eq!(
        patches(&cluster_filter, "CLUSTER")[0]["patch"]["value"],
        patches(&inbound, "CLUSTER")[0]["patch"]["value"],
        "the audit cluster must be the inbound EnvoyFilter's"
    );
    assert_eq!(
        patches(&cluster_filter, "VIRTUAL_HOST"),
        patches(&inbound, "VIRTUAL_HOST"),
        "the body room must be the inbound EnvoyFilter's"
    );
}

// ---------------------------------------------------------------------------
// Kubernetes

#[test]
fn namespace_has_istio_injection() {
    let docs = documents("envoy/k8s/namespace.yaml");
    assert_eq!(kinds(&docs), ["Namespace"]);
    assert_eq!(docs[0]["metadata"]["name"], "agents");
    assert_eq!(docs[0]["metadata"]["labels"]["istio-injection"], "enabled");
}

#[test]
fn agent_manifests_have_the_expected_kinds_in_the_agents_namespace() {
    let cases = [
        ("envoy/k8s/agent-b.yaml", ["ServiceAccount", "Service", "StatefulSet"]),
        ("envoy/k8s/agent-a.yaml", ["ServiceAccount", "Service", "StatefulSet"]),
    ];
    for (path, expected) in cases {
        let docs = documents(path);
        assert_eq!(kinds(&docs), expected, "{path}");
        for doc in &docs {
            assert_eq!(doc["metadata"]["namespace"], "agents", "{path}: {:?}", doc["kind"]);
        }
    }
}

#[test]
fn each_agent_runs_the_audit_sidecar_where_its_envoy_filter_looks() {
    let cases = [
        ("envoy/k8s/agent-b.yaml", "envoy/istio/warrant-inbound.yaml"),
        ("envoy/k8s/agent-a.yaml", "envoy/istio/warrant-outbound.yaml"),
    ];
    for (manifest, filter) in cases {
        let set = find_kind(&documents(manifest), "StatefulSet");
        check_sidecar_pod(&set).unwrap_or_else(|e| panic!("{manifest}: {e}"));
        let labels = set["spec"]["template"]["metadata"]["labels"].as_mapping().unwrap();
        let selector = envoy_filter(filter)["spec"]["workloadSelector"]["labels"].clone();
        for (key, value) in selector.as_mapping().unwrap() {
            assert_eq!(labels.get(key), Some(value), "{filter} selects {key:?} not on {manifest}");
        }
    }
}

#[test]
fn outbound_filter_listens_on_agent_b_service_port() {
    let service = find_kind(&documents("envoy/k8s/agent-b.yaml"), "Service");
    let port = &service["spec"]["ports"][0];
    assert_eq!(port["appProtocol"], "http", "Istio must see HTTP to use the HTTP chain");
    let outbound = envoy_filter("envoy/istio/warrant-outbound.yaml");
    let http = &patches(&outbound, "HTTP_FILTER")[0];
    assert_eq!(http["match"]["listener"]["portNumber"], port["port"]);
}

#[test]
fn sidecar_pod_check_finds_each_broken_copy() {
    type Break = fn(&mut Value);
    let cases: &[(&str, Break, &str)] = &[
        (
            "listens on every address",
            |s| sidecar(s)["args"][4] = "0.0.0.0:50051".into(),
            "--listen",
        ),
        (
            "database outside the volume",
            |s| sidecar(s)["args"][2] = "/tmp/audit.db".into(),
            "/var/lib/warrant",
        ),
        (
            "tcpSocket probe",
            |s| {
                sidecar(s)["readinessProbe"] =
                    serde_yaml::from_str("tcpSocket: {port: 50051}").unwrap()
            },
            "readinessProbe",
        ),
        (
            "probe on another port",
            |s| {
                sidecar(s)["livenessProbe"]["exec"]["command"][2] =
                    "exec 3<>/dev/tcp/127.0.0.1/9999".into()
            },
            "livenessProbe",
        ),
        (
            "no volume claim",
            |s| {
                s["spec"].as_mapping_mut().unwrap().remove("volumeClaimTemplates");
            },
            "volumeClaimTemplates",
        ),
        (
            "runs as root",
            |s| sidecar(s)["securityContext"]["runAsNonRoot"] = false.into(),
            "runAsNonRoot",
        ),
        (
            "volume not writable by the sidecar's group",
            |s| {
                s["spec"]["template"]["spec"].as_mapping_mut().unwrap().remove("securityContext");
            },
            "fsGroup",
        ),
    ];
    for (name, breaks, expected) in cases {
        let mut set = find_kind(&documents("envoy/k8s/agent-b.yaml"), "StatefulSet");
        breaks(&mut set);
        match check_sidecar_pod(&set) {
            Ok(()) => panic!("case {name}: the check passed a broken pod"),
            Err(e) => assert!(e.contains(expected), "case {name}: {e}"),
        }
    }
}

// ---------------------------------------------------------------------------
// Dockerfiles

#[test]
fn filter_image_is_the_wasm_alone_at_plugin_wasm() {
    let instructions = dockerfile("envoy/Dockerfile");
    assert_eq!(
        instructions,
        [
            ("FROM".to_string(), "scratch".to_string()),
            (
                "COPY".to_string(),
                "target/wasm32-wasip1/release/warrant_filter.wasm /plugin.wasm".to_string()
            ),
        ]
    );
    // The COPY source is the artifact scripts/setup builds, relative to the
    // build context (the repo root).
    let source = path("target/wasm32-wasip1/release/warrant_filter.wasm");
    assert!(source.exists(), "{} not found\n\nhint: run scripts/setup first", source.display());
}

#[test]
fn audit_image_runs_the_sidecar_as_the_manifests_do() {
    let instructions = dockerfile("envoy/k8s/warrant-audit.Dockerfile");
    let value = |keyword: &str| {
        instructions
            .iter()
            .rev()
            .find(|(k, _)| k == keyword)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {keyword}"))
    };
    assert_eq!(value("ENTRYPOINT"), r#"["/usr/local/bin/warrant-audit"]"#);
    assert_eq!(value("USER"), "10001:10001");
    let cmd: Vec<String> = serde_json::from_str(&value("CMD")).unwrap();
    let set = find_kind(&documents("envoy/k8s/agent-b.yaml"), "StatefulSet");
    let args: Vec<String> = serde_yaml::from_value(sidecar_of(&set)["args"].clone()).unwrap();
    assert_eq!(cmd, args, "the image's default command and the pod's args must agree");
}

// ---------------------------------------------------------------------------
// The renderer: an EnvoyFilter's patches applied to envoy/envoy.yaml

/// Renders `envoy/envoy.yaml` as the pod's istio-proxy would see it with
/// `envoy_filter` applied:
///
/// 1. CLUSTER ADD: the patch's clusters replace the base's clusters of the
///    same name (the base has its own `warrant_audit`);
/// 2. HTTP_FILTER INSERT_BEFORE: the base's own Warrant filter is removed,
///    and a filter whose config is the EXTENSION_CONFIG named by the patch's
///    `config_discovery` is inserted before the patch's `subFilter`, as
///    Envoy does once ECDS delivers it;
/// 3. the module: `code.remote` (the OCI image) becomes `code.local` with
///    the built `.wasm`, which is what istio-agent does after pulling it.
///
/// Panics on a patch kind or operation it does not know, so a new patch
/// cannot go unchecked.
fn render_envoy_filter(envoy_filter: &Value) -> Value {
    let mut base = base_config();
    let mut extensions = Mapping::new();
    for patch in patches(envoy_filter, "EXTENSION_CONFIG") {
        assert_eq!(patch["patch"]["operation"], "ADD");
        let value = &patch["patch"]["value"];
        let mut typed = value["typed_config"].clone();
        let code = &mut typed["config"]["vm_config"]["code"];
        *code = serde_yaml::from_str(&format!(
            "local: {{ filename: {:?} }}",
            warrant_e2e::wasm_path().display().to_string()
        ))
        .unwrap();
        extensions.insert(value["name"].clone(), typed);
    }

    let resources = &mut base["static_resources"];
    for patch in patches(envoy_filter, "CLUSTER") {
        assert_eq!(patch["patch"]["operation"], "ADD");
        let cluster = patch["patch"]["value"].clone();
        let clusters = resources["clusters"].as_sequence_mut().unwrap();
        clusters.retain(|c| c["name"] != cluster["name"]);
        clusters.push(cluster);
    }

    for patch in patches(envoy_filter, "HTTP_FILTER") {
        assert_eq!(patch["patch"]["operation"], "INSERT_BEFORE");
        let value = &patch["patch"]["value"];
        let typed = extensions
            .get(&value["name"])
            .unwrap_or_else(|| panic!("no EXTENSION_CONFIG named {:?}", value["name"]))
            .clone();
        let anchor = &patch["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"];
        let filters = &mut resources["listeners"][0]["filter_chains"][0]["filters"][0]
            ["typed_config"]["http_filters"];
        let filters = filters.as_sequence_mut().unwrap();
        filters.retain(|f| f["name"] != "envoy.filters.http.wasm");
        let at = filters
            .iter()
            .position(|f| &f["name"] == anchor)
            .unwrap_or_else(|| panic!("no http filter {anchor:?} to insert before"));
        let mut filter = Mapping::new();
        filter.insert("name".into(), value["name"].clone());
        filter.insert("typed_config".into(), typed);
        filters.insert(at, Value::Mapping(filter));
    }
    // Virtual hosts: what the patches merge in is all they get (the base's
    // own body buffer limit is taken out first).
    let hosts = resources["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        ["route_config"]["virtual_hosts"]
        .as_sequence_mut()
        .unwrap();
    for host in hosts.iter_mut() {
        host.as_mapping_mut().unwrap().remove("request_body_buffer_limit");
    }
    for patch in patches(envoy_filter, "VIRTUAL_HOST") {
        assert_eq!(patch["patch"]["operation"], "MERGE");
        for host in hosts.iter_mut() {
            let host = host.as_mapping_mut().unwrap();
            for (key, value) in patch["patch"]["value"].as_mapping().unwrap() {
                host.insert(key.clone(), value.clone());
            }
        }
    }
    for (kind, _) in all_patches(envoy_filter) {
        assert!(
            ["CLUSTER", "EXTENSION_CONFIG", "HTTP_FILTER", "VIRTUAL_HOST"].contains(&kind.as_str()),
            "the renderer does not know {kind} patches"
        );
    }
    base
}

/// The first problem with an EnvoyFilter that installs Warrant, if any.
fn check_envoy_filter(doc: &Value) -> Result<(), String> {
    // 1. A namespaced EnvoyFilter that selects workloads (no selector would
    //    put the filter on every proxy in the namespace).
    if doc["kind"] != "EnvoyFilter" || doc["apiVersion"] != "networking.istio.io/v1alpha3" {
        return Err(format!("expected a networking.istio.io/v1alpha3 EnvoyFilter, found {doc:?}"));
    }
    if doc["spec"]["workloadSelector"]["labels"].as_mapping().is_none_or(Mapping::is_empty) {
        return Err("spec.workloadSelector.labels must select the agent's pods".into());
    }

    // 2. The Wasm config: flag on, never fail open, V8, JSON as a
    //    StringValue, module from an OCI image.
    let extensions = patches(doc, "EXTENSION_CONFIG");
    let [extension] = extensions.as_slice() else {
        return Err(format!("expected one EXTENSION_CONFIG patch, found {}", extensions.len()));
    };
    let value = &extension["patch"]["value"];
    let typed = &value["typed_config"];
    if typed["@type"] != WASM_TYPE {
        return Err(format!("extension config must be {WASM_TYPE}, found {:?}", typed["@type"]));
    }
    let config = &typed["config"];
    if config["allow_on_headers_stop_iteration"] != true {
        return Err("allow_on_headers_stop_iteration must be true (the headers-phase trap)".into());
    }
    if !matches!(config["failure_policy"].as_str(), Some("FAIL_RELOAD" | "FAIL_CLOSED"))
        || !config["fail_open"].is_null()
    {
        return Err(format!(
            "failure_policy must be FAIL_RELOAD or FAIL_CLOSED without fail_open, found {:?}",
            config["failure_policy"]
        ));
    }
    if config["vm_config"]["runtime"] != "envoy.wasm.runtime.v8" {
        return Err(format!("vm_config.runtime must be V8, found {:?}", config["vm_config"]));
    }
    let uri = &config["vm_config"]["code"]["remote"]["http_uri"]["uri"];
    if !uri.as_str().is_some_and(|u| u.starts_with("oci://")) {
        return Err(format!("the module must come from an oci:// image, found {uri:?}"));
    }
    if config["configuration"]["@type"] != STRING_VALUE_TYPE {
        return Err("the plugin configuration must be a StringValue (JSON)".into());
    }

    // 3. The cluster the plugin config names: HTTP/2 to the sidecar's port.
    let audit_cluster = plugin_config(doc)["audit"]["cluster"].as_str().unwrap_or("").to_string();
    let clusters = patches(doc, "CLUSTER");
    let Some(cluster) = clusters
        .iter()
        .map(|p| &p["patch"]["value"])
        .find(|c| c["name"].as_str() == Some(audit_cluster.as_str()))
    else {
        return Err(format!("no CLUSTER patch adds audit.cluster {audit_cluster:?}"));
    };
    let options = &cluster["typed_extension_protocol_options"]
        ["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
    if options["explicit_http_config"]["http2_protocol_options"].is_null() {
        return Err(format!("cluster {audit_cluster} must use HTTP/2 (gRPC)"));
    }
    let socket = &cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        ["address"]["socket_address"];
    let endpoint = format!(
        "{}:{}",
        socket["address"].as_str().unwrap_or(""),
        socket["port_value"].as_u64().unwrap_or(0)
    );
    if endpoint != AUDIT_LISTEN {
        return Err(format!("cluster {audit_cluster} must reach {AUDIT_LISTEN}, found {endpoint}"));
    }

    // 4. The HTTP filter: takes the extension's config over ECDS and goes
    //    in before the router, which every HTTP chain has.
    let filters = patches(doc, "HTTP_FILTER");
    let [filter] = filters.as_slice() else {
        return Err(format!("expected one HTTP_FILTER patch, found {}", filters.len()));
    };
    let inserted = &filter["patch"]["value"];
    if inserted["name"] != value["name"]
        || !inserted["config_discovery"]["type_urls"]
            .as_sequence()
            .is_some_and(|t| t.iter().any(|u| u == WASM_TYPE))
    {
        return Err(format!(
            "the HTTP filter must take {:?} through config_discovery, found {inserted:?}",
            value["name"]
        ));
    }
    if filter["patch"]["operation"] != "INSERT_BEFORE" {
        return Err("the HTTP filter must be INSERT_BEFORE the router".into());
    }
    let anchor = &filter["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"];
    if anchor != "envoy.filters.http.router" {
        return Err(format!(
            "the HTTP filter must be anchored on envoy.filters.http.router, found {anchor:?}"
        ));
    }

    // 5. Room for the held body, so that the filter's limit applies, not
    //    Envoy's (Istio's listeners keep Envoy's 1 MiB read size).
    let max_body = plugin_config(doc)["max_body_bytes"].as_u64().unwrap_or(1 << 20);
    let hosts = patches(doc, "VIRTUAL_HOST");
    let limit = hosts
        .iter()
        .filter(|p| {
            p["patch"]["operation"] == "MERGE"
                && p["match"]["context"] == filter["match"]["context"]
        })
        .find_map(|p| p["patch"]["value"]["request_body_buffer_limit"].as_u64());
    check_body_room(limit, max_body, 1 << 20)
        .map_err(|e| format!("a VIRTUAL_HOST MERGE patch in the filter's context: {e}"))?;
    Ok(())
}

/// Whether Envoy's cap on a held request body (`request_body_buffer_limit`)
/// leaves the filter its own limit: it must hold `max_body_bytes` (what the
/// filter may already hold) plus one read from the connection (up to the
/// listener's `per_connection_buffer_limit_bytes`, and a little more), with
/// 1 MiB to spare. Below that, a body that grows past the filter's limit can
/// get Envoy's own 413, with no decision and no record.
fn check_body_room(limit: Option<u64>, max_body: u64, read: u64) -> Result<(), String> {
    let needed = max_body + read + (1 << 20);
    match limit {
        None => Err(format!("request_body_buffer_limit must be set (at least {needed})")),
        Some(limit) if limit < needed => Err(format!(
            "request_body_buffer_limit {limit} must be at least max_body_bytes {max_body} + \
             one read {read} + 1 MiB = {needed}"
        )),
        Some(_) => Ok(()),
    }
}

/// The first problem with a pod that runs the audit sidecar, if any.
fn check_sidecar_pod(set: &Value) -> Result<(), String> {
    let container = sidecar_of(set);
    let args: Vec<String> = serde_yaml::from_value(container["args"].clone())
        .map_err(|e| format!("warrant-audit args: {e}"))?;

    // 1. `serve` on the pod's loopback, the database on the mounted volume.
    let flag =
        |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    if args.first().map(String::as_str) != Some("serve") {
        return Err(format!("warrant-audit must run `serve`, found {args:?}"));
    }
    if flag("--listen").as_deref() != Some(AUDIT_LISTEN) {
        return Err(format!("--listen must be {AUDIT_LISTEN} (loopback only), found {args:?}"));
    }
    let db = flag("--db").unwrap_or_default();
    let mounts = container["volumeMounts"].as_sequence().cloned().unwrap_or_default();
    let Some(mount) = mounts
        .iter()
        .find(|m| m["mountPath"].as_str().is_some_and(|p| db.starts_with(&format!("{p}/"))))
    else {
        return Err(format!("--db {db:?} must be on a mounted volume under /var/lib/warrant"));
    };
    if mount["mountPath"] != "/var/lib/warrant" {
        return Err(format!("the database volume must be at /var/lib/warrant, found {mount:?}"));
    }

    // 2. That volume is per replica and writable by the sidecar's group.
    let claims = set["spec"]["volumeClaimTemplates"].as_sequence().cloned().unwrap_or_default();
    if !claims.iter().any(|c| c["metadata"]["name"] == mount["name"]) {
        return Err(format!("volumeClaimTemplates must hold {:?}", mount["name"]));
    }
    let security = &container["securityContext"];
    if security["runAsNonRoot"] != true {
        return Err("the sidecar must set runAsNonRoot".into());
    }
    if set["spec"]["template"]["spec"]["securityContext"]["fsGroup"] != security["runAsGroup"] {
        return Err("the pod's fsGroup must be the sidecar's runAsGroup".into());
    }

    // 3. Probes that reach the loopback port from inside the container.
    let port = AUDIT_LISTEN.rsplit(':').next().unwrap_or("");
    for probe in ["readinessProbe", "livenessProbe"] {
        let command = container[probe]["exec"]["command"]
            .as_sequence()
            .map(|c| c.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" "))
            .unwrap_or_default();
        if !command.contains(&format!("/dev/tcp/127.0.0.1/{port}")) {
            return Err(format!(
                "{probe} must connect to 127.0.0.1:{port} from inside the container, found {:?}",
                container[probe]
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Helpers

fn path(relative: &str) -> PathBuf {
    warrant_e2e::repo_root().join(relative)
}

/// Every YAML document of a file (documents are separated by `---` lines;
/// empty ones, such as a comment-only header, are dropped).
fn documents(relative: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(path(relative)).unwrap();
    let mut docs = vec![String::new()];
    for line in text.lines() {
        if line.trim_end() == "---" {
            docs.push(String::new());
        } else if let Some(doc) = docs.last_mut() {
            doc.push_str(line);
            doc.push('\n');
        }
    }
    docs.iter()
        .enumerate()
        .map(|(i, d)| {
            serde_yaml::from_str::<Value>(d)
                .unwrap_or_else(|e| panic!("{relative}: document {i}: {e}"))
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn kinds(docs: &[Value]) -> Vec<&str> {
    docs.iter().map(|d| d["kind"].as_str().unwrap_or("?")).collect()
}

fn find_kind(docs: &[Value], kind: &str) -> Value {
    docs.iter().find(|d| d["kind"] == kind).cloned().unwrap_or_else(|| panic!("no {kind}"))
}

fn envoy_filter(relative: &str) -> Value {
    let docs = documents(relative);
    assert_eq!(kinds(&docs), ["EnvoyFilter"], "{relative}");
    docs.into_iter().next().unwrap()
}

fn wasm_plugin() -> Value {
    let docs = documents("envoy/istio/wasmplugin.yaml");
    assert_eq!(kinds(&docs), ["WasmPlugin", "EnvoyFilter"]);
    docs.into_iter().next().unwrap()
}

fn all_patches(doc: &Value) -> Vec<(String, Value)> {
    doc["spec"]["configPatches"]
        .as_sequence()
        .unwrap_or_else(|| panic!("no spec.configPatches in {doc:?}"))
        .iter()
        .map(|p| (p["applyTo"].as_str().unwrap_or("?").to_string(), p.clone()))
        .collect()
}

fn patches(doc: &Value, apply_to: &str) -> Vec<Value> {
    all_patches(doc).into_iter().filter(|(k, _)| k == apply_to).map(|(_, p)| p).collect()
}

/// The patches of one kind, mutable, in order.
fn patches_mut<'a>(doc: &'a mut Value, apply_to: &str) -> Vec<&'a mut Value> {
    doc["spec"]["configPatches"]
        .as_sequence_mut()
        .unwrap()
        .iter_mut()
        .filter(|p| p["applyTo"] == apply_to)
        .collect()
}

fn extension_config(doc: &mut Value) -> &mut Value {
    &mut patches_mut(doc, "EXTENSION_CONFIG").remove(0)["patch"]["value"]["typed_config"]["config"]
}

/// The plugin configuration JSON of an EnvoyFilter's Wasm config.
fn plugin_config(doc: &Value) -> serde_json::Value {
    let extension = &patches(doc, "EXTENSION_CONFIG")[0];
    let value = &extension["patch"]["value"]["typed_config"]["config"]["configuration"]["value"];
    serde_json::from_str(value.as_str().unwrap()).unwrap()
}

fn sidecar_of(set: &Value) -> &Value {
    set["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .and_then(|c| c.iter().find(|c| c["name"] == "warrant-audit"))
        .expect("a warrant-audit container")
}

fn sidecar(set: &mut Value) -> &mut Value {
    set["spec"]["template"]["spec"]["containers"]
        .as_sequence_mut()
        .and_then(|c| c.iter_mut().find(|c| c["name"] == "warrant-audit"))
        .expect("a warrant-audit container")
}

fn yaml_to_json(value: &Value) -> serde_json::Value {
    serde_json::to_value(value).unwrap()
}

/// `envoy/envoy.yaml` with the module path made absolute.
fn base_config() -> Value {
    let text = std::fs::read_to_string(path("envoy/envoy.yaml")).unwrap();
    let mut doc: Value = serde_yaml::from_str(&text).unwrap();
    let filename = warrant_e2e::wasm_path().display().to_string();
    wasm_filter_config(&mut doc)["vm_config"]["code"]["local"]["filename"] = filename.into();
    doc
}

fn wasm_filter_config(doc: &mut Value) -> &mut Value {
    doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        ["http_filters"]
        .as_sequence_mut()
        .and_then(|f| f.iter_mut().find(|f| f["name"] == "envoy.filters.http.wasm"))
        .map(|f| &mut f["typed_config"]["config"])
        .expect("envoy.yaml has the wasm filter")
}

fn set_plugin_configuration(doc: &mut Value, json: &str) {
    wasm_filter_config(doc)["configuration"]["value"] = json.into();
}

fn validate_doc(doc: &Value, name: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(format!("{name}.yaml"));
    std::fs::write(&file, serde_yaml::to_string(doc).unwrap()).unwrap();
    validate(&file)
}

fn assert_validates(doc: &Value, name: &str) {
    let (ok, output) = validate_doc(doc, name);
    assert!(ok, "{name} does not validate:\n{output}\n{}", serde_yaml::to_string(doc).unwrap());
}

/// The fields serde lists after "unknown field `zzz`, expected ..." in the
/// filter's refusal (one of: "expected `a`", "expected `a` or `b`",
/// "expected one of `a`, `b`, ...").
fn accepted_fields(output: &str) -> Vec<String> {
    let Some(line) = output.lines().find(|l| l.contains("unknown field `zzz`")) else {
        return Vec::new();
    };
    let Some((_, list)) = line.split_once("expected") else {
        return Vec::new();
    };
    list.split('`').skip(1).step_by(2).map(str::to_string).collect()
}

/// A Dockerfile's instructions as (keyword, rest), comments and blank lines
/// dropped, continuation lines joined.
fn dockerfile(relative: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path(relative)).unwrap();
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if current.is_empty() && (line.is_empty() || line.starts_with('#')) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(start) => current.push_str(start),
            None => {
                current.push_str(line);
                joined.push(std::mem::take(&mut current));
            }
        }
    }
    joined
        .into_iter()
        .map(|l| match l.split_once(char::is_whitespace) {
            Some((keyword, rest)) => (keyword.to_ascii_uppercase(), rest.trim().to_string()),
            None => (l.to_ascii_uppercase(), String::new()),
        })
        .collect()
}
