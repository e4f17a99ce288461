//! The checked-in CRD is exactly what `imagebloat crd` prints.

#[test]
fn checked_in_crd_matches_the_rust_types() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_imagebloat"))
        .arg("crd")
        .output()
        .expect("run imagebloat crd");
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).unwrap();
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crds/imagereports.imagebloat.dev.yaml"
    );
    let checked_in = std::fs::read_to_string(path).unwrap();
    let cluster = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crds/clusterimagereports.imagebloat.dev.yaml"
    ))
    .unwrap();
    assert!(
        printed == format!("{checked_in}---\n{cluster}"),
        "crds/ is stale: print each CRD with `imagebloat crd` (ImageReport first, then ClusterImageReport after `---`) into crds/"
    );
}

#[test]
fn the_crd_is_what_users_and_kubectl_expect() {
    let crd: serde_yaml::Value =
        serde_yaml::from_str(&imagebloat::report::crd::crd_yaml()).unwrap();
    assert_eq!(crd["spec"]["group"], "imagebloat.dev");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert_eq!(crd["spec"]["names"]["shortNames"][0], "ir");
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert!(version["subresources"]["status"].is_mapping());
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        columns,
        [
            "Images",
            "Pull Size",
            "Reclaimable",
            "Efficiency",
            "Age",
            "Wasted",
            "Status"
        ]
    );
    // Field docs reach the schema, for `kubectl explain imagereport.status`.
    let status = &version["schema"]["openAPIV3Schema"]["properties"]["status"];
    assert!(
        status["properties"]["summary"]["description"]
            .as_str()
            .unwrap()
            .contains("distinct images")
    );
}

#[test]
fn the_helm_charts_crd_is_the_same_file() {
    let root = env!("CARGO_MANIFEST_DIR");
    let chart = std::fs::read(format!(
        "{root}/charts/imagebloat/crds/imagereports.imagebloat.dev.yaml"
    ))
    .unwrap();
    let crds = std::fs::read(format!("{root}/crds/imagereports.imagebloat.dev.yaml")).unwrap();
    assert!(
        chart == crds,
        "charts/imagebloat/crds/ is stale: run scripts/sync-chart-crd.sh"
    );
    let chart = std::fs::read(format!(
        "{root}/charts/imagebloat/crds/clusterimagereports.imagebloat.dev.yaml"
    ))
    .unwrap();
    let crds = std::fs::read(format!(
        "{root}/crds/clusterimagereports.imagebloat.dev.yaml"
    ))
    .unwrap();
    assert!(
        chart == crds,
        "charts/imagebloat/crds/ is stale: run scripts/sync-chart-crd.sh"
    );
}

#[test]
fn the_cluster_report_crd_is_cluster_scoped_and_sorts_fix_first() {
    let crd: serde_yaml::Value =
        serde_yaml::from_str(&imagebloat::report::cluster::cluster_crd_yaml()).unwrap();
    assert_eq!(
        crd["metadata"]["name"],
        "clusterimagereports.imagebloat.dev"
    );
    assert_eq!(crd["spec"]["scope"], "Cluster");
    assert_eq!(crd["spec"]["names"]["kind"], "ClusterImageReport");
    assert_eq!(crd["spec"]["names"]["shortNames"][0], "cir");
    let version = &crd["spec"]["versions"][0];
    assert!(version["subresources"]["status"].is_mapping());
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        columns,
        [
            "Image",
            "Workloads",
            "Nodes",
            "Pull",
            "Fleet Reclaimable",
            "Efficiency",
            "Age",
            "Fleet Pull"
        ]
    );
    let fleet =
        &version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["fleet"];
    assert_eq!(
        fleet["properties"]["reclaimablePullBytes"]["type"], "integer",
        "the sort key sorts as a number"
    );
    assert!(
        fleet["description"]
            .as_str()
            .unwrap()
            .contains("no other image running on that Node")
    );
}

/// Every CRD `imagebloat crd` prints (one YAML document each).
fn printed_crds() -> Vec<serde_yaml::Value> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_imagebloat"))
        .arg("crd")
        .output()
        .expect("run imagebloat crd");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let crds: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("a YAML document"))
        .filter(|doc: &serde_yaml::Value| !doc.is_null())
        .collect();
    assert!(!crds.is_empty(), "imagebloat crd printed no CRD");
    crds
}

/// Walks `schema` (the field at `path`), calling `visit` on every field beneath it: the
/// properties of objects and the fields of array items (`path[]`).
fn walk_fields(
    path: &str,
    schema: &serde_yaml::Value,
    visit: &mut dyn FnMut(&str, &serde_yaml::Value),
) {
    if let Some(properties) = schema["properties"].as_mapping() {
        for (name, field) in properties {
            let path = format!("{path}.{}", name.as_str().unwrap());
            visit(&path, field);
            walk_fields(&path, field, visit);
        }
    }
    if schema["items"].is_mapping() {
        walk_fields(&format!("{path}[]"), &schema["items"], visit);
    }
}

/// `kubectl explain` prints a field's description: every field of every CRD has one, and none is
/// `nullable` (an API server that publishes OpenAPI v2 drops the type and children of a nullable
/// field, so explain could not reach what lies beneath it).
#[test]
fn every_field_of_every_crd_is_described_and_reachable_by_kubectl_explain() {
    let mut undescribed = Vec::new();
    let mut nullable = Vec::new();
    let mut fields = 0;
    for crd in printed_crds() {
        let kind = crd["spec"]["names"]["singular"]
            .as_str()
            .unwrap()
            .to_string();
        for version in crd["spec"]["versions"].as_sequence().unwrap() {
            let root = &version["schema"]["openAPIV3Schema"];
            let at = format!("{kind} ({})", version["name"].as_str().unwrap());
            assert!(
                root["description"]
                    .as_str()
                    .is_some_and(|d| !d.trim().is_empty()),
                "{at}"
            );
            walk_fields(&kind, root, &mut |path, field| {
                fields += 1;
                if field["description"]
                    .as_str()
                    .is_none_or(|d| d.trim().is_empty())
                {
                    undescribed.push(format!("{path} ({at})"));
                }
                if field["nullable"].as_bool() == Some(true)
                    || field["items"]["nullable"].as_bool() == Some(true)
                {
                    nullable.push(format!("{path} ({at})"));
                }
            });
        }
    }
    assert!(fields >= 84, "only {fields} fields walked");
    assert!(
        undescribed.is_empty(),
        "{} fields without a description (add a doc comment):\n{}",
        undescribed.len(),
        undescribed.join("\n")
    );
    assert!(
        nullable.is_empty(),
        "nullable fields (hidden from kubectl explain on OpenAPI v2):\n{}",
        nullable.join("\n")
    );
}
