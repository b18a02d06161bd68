//! `goblog-lab prepare`: every image a lab needs, built before anyone
//! waits for it. The node image takes a minute of debootstrap the first
//! time; a workshop leader would rather pay that before the room fills.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::cli::{Output, PrepareArgs};
use crate::docker;
use crate::error::{Error, Result};
use crate::lab::spec;
use crate::provider;
use crate::steps::{images, node_image};
use crate::ui::Ui;

#[derive(Debug, Serialize)]
struct Prepared {
    node_image: String,
    registry_image: String,
    edge_image: String,
    /// Services built from source, by name.
    services: BTreeMap<String, String>,
    /// The VM image's cache directory, with `--driver qemu`.
    #[serde(skip_serializing_if = "Option::is_none")]
    vm_image: Option<String>,
}

pub async fn run(args: &PrepareArgs, ui: &Ui) -> Result<()> {
    let loaded = spec::load(args.file.as_deref())?;
    let host = docker::connect_host().await?;
    let step = ui.step("Building the node image 🖼 (debootstrap; about a minute the first time)");
    let node = node_image::ensure(&host).await?;
    step.done_with(node.clone());
    let step = ui.step("Building the registry and edge images, and the services 🔨");
    let built = async {
        let built =
            images::built_services(&host, &loaded.project_root, &loaded.spec.services).await?;
        Ok::<_, Error>(
            built
                .into_iter()
                .map(|(name, built)| (name, built.image.reference())),
        )
    };
    let (registry, edge, services) = tokio::try_join!(
        images::registry(&host, &node),
        images::edge(&host, &node),
        built
    )?;
    step.done();
    let vm_image = match args.driver {
        Some(kind) => provider::prepare(kind, ui).await?,
        None => None,
    };
    let prepared = Prepared {
        vm_image,
        node_image: node,
        registry_image: registry.reference(),
        edge_image: edge.reference(),
        services: services.into_iter().collect(),
    };
    if args.output == Output::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&prepared).expect("serialises")
        );
    } else {
        println!("node      {}", prepared.node_image);
        println!("registry  {}", prepared.registry_image);
        println!("edge      {}", prepared.edge_image);
        for (name, image) in &prepared.services {
            println!("service   {image} ({name})");
        }
        if let Some(dir) = &prepared.vm_image {
            println!("vm        {dir}");
        }
    }
    Ok(())
}
