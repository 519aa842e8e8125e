//! `tusk crds`: print every CustomResourceDefinition as multi-document YAML.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

/// Arguments of `tusk crds`.
#[derive(Debug, Args)]
pub struct CrdsArgs {
    /// Write one file per CRD into this directory (as deploy/crds/ holds them) instead of printing
    /// one stream to stdout.
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
}

/// Prints the CRDs to stdout, ready for `kubectl apply -f -`, or writes them to a directory.
pub fn run(args: CrdsArgs) -> anyhow::Result<()> {
    let Some(dir) = args.output_dir else {
        print!("{}", tusk_api::crds_yaml()?);
        return Ok(());
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for crd in tusk_api::crds() {
        let path = dir.join(tusk_api::crd::file_name(&crd));
        std::fs::write(&path, tusk_api::crd::crd_file_contents(&crd)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
