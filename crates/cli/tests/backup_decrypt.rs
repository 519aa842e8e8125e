//! `tusk backup decrypt` with the passphrase alone, on objects in the current format (sized
//! gzip members, read on every core) and in the format tusk wrote before.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};

use tusk_backup::Compression;
use tusk_backup::compress::CompressWriter;

const PASSPHRASE: &str = "decrypt me with this alone";

/// Bytes that compress about 3:1, standing in for a tar stream (decrypt does not parse it).
fn backup_bytes() -> Vec<u8> {
    let mut state = 7u64;
    (0..6 << 20)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            b"tusk,pg 0123"[(state >> 60) as usize % 12]
        })
        .collect()
}

/// `compressed` sealed as a backup object: salt and DARE stream under the passphrase.
fn seal(compressed: &[u8]) -> Vec<u8> {
    let mut sealed =
        tusk_dare::envelope::encrypt_writer(Vec::new(), PASSPHRASE.as_bytes()).unwrap();
    sealed.write_all(compressed).unwrap();
    sealed.finish().unwrap()
}

fn decrypt(dir: &Path, object: &[u8], name: &str) -> (Output, std::path::PathBuf) {
    let passphrase_file = dir.join("passphrase");
    std::fs::write(&passphrase_file, PASSPHRASE).unwrap();
    let object_file = dir.join(format!("{name}.tar.gz.dare"));
    std::fs::write(&object_file, object).unwrap();
    let output_file = dir.join(format!("{name}.tar"));
    let output = Command::new(env!("CARGO_BIN_EXE_tusk"))
        .args(["backup", "decrypt", "--passphrase-file"])
        .arg(&passphrase_file)
        .arg(&object_file)
        .arg(&output_file)
        .env_clear()
        .output()
        .unwrap();
    (output, output_file)
}

#[test]
fn decrypt_gives_back_the_exact_bytes_of_new_and_old_objects() {
    let dir = tempfile::tempdir().unwrap();
    let original = backup_bytes();

    let mut members = CompressWriter::new(Compression::Gzip { level: 6 }, Vec::new()).unwrap();
    members.write_all(&original).unwrap();
    let mut old = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    old.write_all(&original).unwrap();
    let mut zstd = CompressWriter::new(Compression::Zstd { level: 3 }, Vec::new()).unwrap();
    zstd.write_all(&original).unwrap();

    for (name, compressed) in [
        ("sized-members", members.finish().unwrap()),
        ("single-gzip", old.finish().unwrap()),
        ("zstd", zstd.finish().unwrap()),
    ] {
        let (output, tar) = decrypt(dir.path(), &seal(&compressed), name);
        assert!(
            output.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(std::fs::read(&tar).unwrap() == original, "{name}");
    }
}

#[test]
fn decrypt_refuses_a_cut_object_and_leaves_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let mut members = CompressWriter::new(Compression::Gzip { level: 1 }, Vec::new()).unwrap();
    members.write_all(&backup_bytes()).unwrap();
    let object = seal(&members.finish().unwrap());
    // Cut at a package boundary: every package that is there verifies.
    let packages = (object.len() - 32) / 65568;
    let cut = &object[..32 + (packages / 2) * 65568];
    let (output, tar) = decrypt(dir.path(), cut, "cut");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("truncated"), "{stderr}");
    assert!(!tar.exists());
}
