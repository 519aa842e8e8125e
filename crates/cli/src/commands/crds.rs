//! `tusk crds`: print every CustomResourceDefinition as multi-document YAML.

/// Writes the CRDs to stdout, ready for `kubectl apply -f -`.
pub fn run() -> anyhow::Result<()> {
    print!("{}", tusk_api::crds_yaml()?);
    Ok(())
}
