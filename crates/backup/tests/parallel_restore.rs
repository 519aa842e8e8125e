//! The restore format read on every core: sized gzip members or independent zstd frames inside
//! DARE packages. Objects are
//! written by the real writers (the backup's compressor and the passphrase envelope), stored in
//! the embedded S3 server and restored by the real restore, or read by `decrypt_to_tar`.

mod support;

use std::io::{Cursor, Read, Write};

use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;
use support::{S3, temp_dir};
use tusk_backup::compress::{
    CompressWriter, END_MEMBER, MEMBER_INPUT_SIZE, ZSTD_END_FRAME, ZSTD_START_FRAME,
    sized_member_len,
};
use tusk_backup::restore::{decrypt_to_tar, recorded_failure};
use tusk_backup::{Compression, RESTORE_INCOMPLETE_MARKER, RestoreError, RestoreOptions, restore};
use tusk_dare::DareError;
use tusk_dare::package::{HEADER_SIZE, MAX_PACKAGE_SIZE, MAX_PAYLOAD_SIZE};

const PASSPHRASE: &[u8] = b"parallel restore passphrase";
const SALT: usize = tusk_dare::envelope::SALT_SIZE;

/// Text that compresses about 3:1, like real table data rather than pgbench's.
fn table_text(len: usize, seed: u64) -> Vec<u8> {
    let words = [
        "alpha", "berlin", "42", "order", "shipped", "0.1875", "customer", "z", "NULL", "2026-12",
    ];
    let mut state = seed;
    let mut text = Vec::with_capacity(len + 16);
    while text.len() < len {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        text.extend_from_slice(words[(state >> 60) as usize % words.len()].as_bytes());
        text.extend_from_slice(&(state >> 40).to_le_bytes()[..2]);
        text.push(b' ');
    }
    text.truncate(len);
    text
}

/// The tar stream of a small data directory, with a WAL segment so it restores on its own.
fn data_directory_tar(seed: u64) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o600);
        header.set_cksum();
        builder.append_data(&mut header, path, data).unwrap();
    };
    add("PG_VERSION", b"17\n");
    add("global/pg_control", &table_text(8192, seed));
    add("base/5/16384", &table_text(5 << 20, seed + 1));
    add("base/5/16384_fsm", &table_text(24 << 10, seed + 2));
    add(
        "pg_wal/000000010000000000000002",
        &table_text(1 << 20, seed + 3),
    );
    builder.into_inner().unwrap()
}

/// `plaintext` in the passphrase envelope: what the backup writes once it has compressed.
fn encrypt(plaintext: &[u8]) -> Vec<u8> {
    let mut writer = tusk_dare::envelope::encrypt_writer(Vec::new(), PASSPHRASE).unwrap();
    writer.write_all(plaintext).unwrap();
    writer.finish().unwrap()
}

/// `tar` compressed as the backup compresses it (sized gzip members, or zstd), unencrypted.
fn compress(tar: &[u8], compression: Compression) -> Vec<u8> {
    let mut writer = CompressWriter::new(compression, Vec::new()).unwrap();
    for piece in tar.chunks(100_000) {
        writer.write_all(piece).unwrap();
    }
    writer.finish().unwrap()
}

fn decrypt(object: &[u8]) -> Result<Vec<u8>, RestoreError> {
    let mut tar = Vec::new();
    decrypt_to_tar(Cursor::new(object.to_vec()), PASSPHRASE, &mut tar).map(|_| tar)
}

/// Where each sized member starts in a gzip stream, and its length.
fn members(gzip: &[u8]) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    let mut at = 0;
    while at < gzip.len() {
        let len = sized_member_len(&gzip[at..]).expect("every member carries its size");
        found.push((at, len));
        at += len;
    }
    assert_eq!(at, gzip.len());
    found
}

/// Offset in the object of plaintext byte `offset` of its DARE stream.
fn ciphertext_offset(offset: usize) -> usize {
    SALT + offset / MAX_PAYLOAD_SIZE * MAX_PACKAGE_SIZE + HEADER_SIZE + offset % MAX_PAYLOAD_SIZE
}

fn dare_error(error: &RestoreError) -> DareError {
    let RestoreError::Unreadable(io) = error else {
        panic!("not an unreadable object: {error}");
    };
    *DareError::from_io(io).unwrap_or_else(|| panic!("not a DARE error: {io}"))
}

#[test]
fn sized_members_round_trip_and_read_as_plain_gzip() {
    let tar = data_directory_tar(1);
    let gzip = compress(&tar, Compression::Gzip { level: 6 });
    let found = members(&gzip);
    assert!(found.len() >= 13, "{} members", found.len());
    assert!(gzip.ends_with(&END_MEMBER));
    assert!(gzip.len() < tar.len() / 2, "compressed to {}", gzip.len());

    // Any gzip reader reads the members as one stream.
    let mut standard = Vec::new();
    flate2::read::MultiGzDecoder::new(&gzip[..])
        .read_to_end(&mut standard)
        .unwrap();
    assert!(standard == tar);

    // And the restore path gives back every byte.
    assert!(decrypt(&encrypt(&gzip)).unwrap() == tar);
}

#[test]
fn zstd_frames_round_trip_and_read_as_plain_zstd() {
    let tar = data_directory_tar(5);
    let zstd = compress(&tar, Compression::Zstd { level: 3 });
    assert!(zstd.starts_with(&ZSTD_START_FRAME) && zstd.ends_with(&ZSTD_END_FRAME));
    assert!(zstd.len() < tar.len() / 2, "compressed to {}", zstd.len());
    // Any zstd reader skips the markers and reads the frames as one stream.
    assert!(zstd::stream::decode_all(&zstd[..]).unwrap() == tar);
    assert!(decrypt(&encrypt(&zstd)).unwrap() == tar);
}

#[test]
fn objects_written_by_earlier_versions_still_restore() {
    // What tusk wrote before: one gzip stream of pigz-style blocks (gzp's Gzip format).
    use gzp::ZWriter;
    let tar = data_directory_tar(2);
    let mut old =
        gzp::par::compress::ParCompressBuilder::<gzp::deflate::Gzip>::new().from_writer(Vec::new());
    old.write_all(&tar).unwrap();
    let gzip = old.finish().unwrap();
    assert_eq!(sized_member_len(&gzip), None);
    assert!(decrypt(&encrypt(&gzip)).unwrap() == tar);

    // Sized members as gzp's Mgzip wrote them (zlib-ng at every level), before tusk deflated
    // them itself; gzp ends the stream without the end member, which tusk appended.
    let mut mgzip = gzp::par::compress::ParCompressBuilder::<gzp::deflate::Mgzip>::new()
        .buffer_size(MEMBER_INPUT_SIZE)
        .unwrap()
        .from_writer(Vec::new());
    mgzip.write_all(&tar).unwrap();
    let mut sized = mgzip.finish().unwrap();
    assert!(sized_member_len(&sized).is_some());
    sized.extend_from_slice(&END_MEMBER);
    assert!(decrypt(&encrypt(&sized)).unwrap() == tar);

    // And a plain single-member gzip file (as `gzip` writes it).
    let mut plain = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    plain.write_all(&tar).unwrap();
    assert!(decrypt(&encrypt(&plain.finish().unwrap())).unwrap() == tar);

    // zstd as tusk wrote it before: one streamed frame, read on one core.
    let mut old_zstd = zstd::Encoder::new(Vec::new(), 3).unwrap();
    old_zstd.write_all(&tar).unwrap();
    assert!(decrypt(&encrypt(&old_zstd.finish().unwrap())).unwrap() == tar);
}

/// Where a gzip member or zstd frame starts, about halfway through `compressed`.
fn unit_start_midway(compressed: &[u8], compression: Compression) -> usize {
    match compression {
        Compression::Gzip { .. } => {
            let found = members(compressed);
            found[found.len() / 2].0
        }
        Compression::Zstd { .. } => {
            let magic = [0x28, 0xb5, 0x2f, 0xfd];
            let half = compressed.len() / 2;
            half + compressed[half..]
                .windows(4)
                .position(|window| window == magic)
                .expect("a frame after the middle")
        }
    }
}

#[test]
fn tampered_truncated_reordered_and_spliced_objects_are_refused() {
    for compression in [
        Compression::Gzip { level: 6 },
        Compression::Zstd { level: 3 },
    ] {
        tampered_objects_are_refused(compression);
    }
}

fn tampered_objects_are_refused(compression: Compression) {
    let tar = data_directory_tar(3);
    let gzip = compress(&tar, compression);
    let object = encrypt(&gzip);
    // A second backup of other data: same writer, its own salt, key and nonce.
    let other = encrypt(&compress(&data_directory_tar(4), compression));
    let packages = (object.len() - SALT).div_ceil(MAX_PACKAGE_SIZE);
    assert!(packages > 10, "{compression:?}: {packages} packages");
    let member_start = unit_start_midway(&gzip, compression);

    let flipped_at = gzip.len() * 2 / 3;
    let mut flipped = object.clone();
    flipped[ciphertext_offset(flipped_at)] ^= 0x01;

    let at_member = ciphertext_offset(member_start);
    let at_package = SALT + 5 * MAX_PACKAGE_SIZE;

    let mut reordered = object.clone();
    let (third, fourth) = (SALT + 2 * MAX_PACKAGE_SIZE, SALT + 3 * MAX_PACKAGE_SIZE);
    let package_three = object[third..fourth].to_vec();
    reordered.copy_within(fourth..fourth + MAX_PACKAGE_SIZE, third);
    reordered[fourth..fourth + MAX_PACKAGE_SIZE].copy_from_slice(&package_three);

    // Packages of another stream, whole, at the same positions.
    let mut spliced_packages = object.clone();
    spliced_packages[third..fourth].copy_from_slice(&other[third..fourth]);
    // The second half of the members taken from the other backup, ciphertext and all.
    let mut spliced_members = object[..at_member].to_vec();
    spliced_members.extend_from_slice(&other[at_member..]);

    let mut trailing = object.clone();
    trailing.extend_from_slice(&other[SALT..SALT + HEADER_SIZE]);

    let cases: [(&str, Vec<u8>, DareError); 8] = [
        (
            "a flipped byte",
            flipped,
            DareError::TagMismatch {
                package: (flipped_at / MAX_PAYLOAD_SIZE) as u64,
            },
        ),
        (
            "cut at a package boundary",
            object[..at_package].to_vec(),
            DareError::Truncated,
        ),
        (
            "cut inside a package",
            object[..at_package + 1000].to_vec(),
            DareError::Truncated,
        ),
        (
            "cut where a gzip member starts",
            object[..at_member].to_vec(),
            DareError::Truncated,
        ),
        (
            "bytes after the final package",
            trailing,
            DareError::TrailingData,
        ),
        (
            "two packages swapped",
            reordered,
            DareError::TagMismatch { package: 2 },
        ),
        (
            "a package of another stream",
            spliced_packages,
            DareError::NonceMismatch { package: 2 },
        ),
        (
            "members of another backup",
            spliced_members,
            DareError::TagMismatch {
                package: (member_start / MAX_PAYLOAD_SIZE) as u64,
            },
        ),
    ];
    for (what, bytes, expected) in cases {
        let Err(error) = decrypt(&bytes) else {
            panic!("{compression:?}, {what}: the object was accepted");
        };
        assert_eq!(
            dare_error(&error),
            expected,
            "{compression:?}, {what}: {error}"
        );
        assert!(
            error
                .to_string()
                .starts_with("the backup object is unreadable"),
            "{what}: {error}"
        );
    }
    assert!(decrypt(&object).unwrap() == tar);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_object_leaves_nothing_to_start_postgres_on_and_a_good_one_restores() {
    let s3 = S3::start().await;
    let store = s3.store("");
    let tar = data_directory_tar(5);
    let gzip = compress(&tar, Compression::Gzip { level: 1 });
    let object = encrypt(&gzip);
    let (end_member, _) = *members(&gzip).last().unwrap();
    let mut late_flip = object.clone();
    late_flip[ciphertext_offset(gzip.len() - 100)] ^= 0x80;
    // Re-sealed with the passphrase but cut right before the end member: only the gzip
    // layer can tell.
    let without_end = encrypt(&gzip[..gzip.len() - END_MEMBER.len()]);
    for (key, bytes) in [
        ("good", object.clone()),
        ("late-flip", late_flip),
        (
            "cut-at-member",
            object[..ciphertext_offset(end_member)].to_vec(),
        ),
        ("no-end-member", without_end),
    ] {
        store
            .object_store()
            .put(&ObjectPath::from(key), bytes.into())
            .await
            .unwrap();
    }
    let options = RestoreOptions {
        passphrase: PASSPHRASE.to_vec(),
        ..RestoreOptions::default()
    };
    let target = temp_dir();

    for (key, cause) in [
        ("late-flip", "failed authentication"),
        ("cut-at-member", "truncated"),
        ("no-end-member", "without its end member"),
    ] {
        let data_dir = target.path().join(key);
        let error = restore(&store, key, &data_dir, &options)
            .await
            .expect_err(key);
        assert!(
            matches!(error, RestoreError::Unreadable(_)),
            "{key}: {error}"
        );
        assert!(error.to_string().contains(cause), "{key}: {error}");
        // The supervisor never starts PostgreSQL on a directory with the marker, and the
        // marker says why; none of the unpacked files stay.
        let recorded = recorded_failure(&data_dir).expect("the failure is recorded");
        assert!(recorded.contains(cause), "{key}: {recorded}");
        let left: Vec<_> = std::fs::read_dir(&data_dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(left, [RESTORE_INCOMPLETE_MARKER], "{key}");
    }

    let data_dir = target.path().join("good");
    let outcome = restore(&store, "good", &data_dir, &options).await.unwrap();
    assert_eq!(outcome.tar_bytes, tar.len() as u64);
    assert!(!data_dir.join(RESTORE_INCOMPLETE_MARKER).exists());
    let mut archive = tar::Archive::new(&tar[..]);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().into_owned();
        let mut expected = Vec::new();
        entry.read_to_end(&mut expected).unwrap();
        assert!(
            std::fs::read(data_dir.join(&path)).unwrap() == expected,
            "{path:?}"
        );
    }
}
