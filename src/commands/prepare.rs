//! `goblog-lab prepare`: every image a lab needs, built before anyone
//! waits for it. The node image takes a minute of debootstrap the first
//! time; a workshop leader would rather pay that before the room fills.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::cli::{Output, PrepareArgs};
use crate::docker;
use crate::error::Result;
use crate::lab::spec;
use crate::provider;
use crate::steps::images;
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
    let images::Prepared {
        node,
        registry,
        edge,
        services,
    } = images::prepare(&host, &loaded, ui).await?;
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
