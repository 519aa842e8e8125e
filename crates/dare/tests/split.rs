//! A stream taken apart by `PackageSplitter` and opened out of order, as the parallel restore
//! does: the same plaintext as the serial reader, and the same refusals.

mod common;

use common::*;
use tusk_dare::split::PackageSplitter;
use tusk_dare::{DareError, DecryptReader};

/// Every package of `stream`, opened in reverse order, put back by position.
fn open_in_reverse(stream: &[u8]) -> Result<Vec<u8>, DareError> {
    let key = test_key(1);
    let mut splitter = PackageSplitter::new(stream, &key);
    let mut sealed = Vec::new();
    loop {
        match splitter.next_package() {
            Ok(Some(package)) => sealed.push(package),
            Ok(None) => break,
            Err(error) => return Err(*DareError::from_io(&error).expect("a DARE error")),
        }
    }
    let mut opened = Vec::new();
    let mut opener = splitter.opener();
    for package in sealed.into_iter().rev() {
        let index = package.index();
        opened.push((index, opener.open(package)?));
    }
    opened.sort_by_key(|(index, _)| *index);
    Ok(opened.into_iter().flat_map(|(_, bytes)| bytes).collect())
}

#[test]
fn packages_opened_out_of_order_give_the_stream_back() {
    for suite in SUITES {
        for len in [1, FULL, FULL + 1, 3 * FULL + 17] {
            let data = plaintext(len);
            let stream = encrypt(&test_key(1), suite, &data);
            assert!(open_in_reverse(&stream).unwrap() == data, "{suite:?} {len}");
        }
    }
}

#[test]
fn the_splitter_refuses_what_the_serial_reader_refuses() {
    let data = plaintext(3 * FULL + 17);
    let stream = encrypt(&test_key(1), SUITES[0], &data);
    let ranges = package_ranges(&stream);

    let cut = &stream[..ranges[2].end];
    assert_eq!(open_in_reverse(cut), Err(DareError::Truncated));
    let mut trailing = stream.clone();
    trailing.push(0);
    assert_eq!(open_in_reverse(&trailing), Err(DareError::TrailingData));
    let mut swapped = stream[..ranges[0].end].to_vec();
    swapped.extend_from_slice(&stream[ranges[2].clone()]);
    swapped.extend_from_slice(&stream[ranges[1].clone()]);
    swapped.extend_from_slice(&stream[ranges[3].clone()]);
    assert_eq!(
        open_in_reverse(&swapped),
        Err(DareError::TagMismatch { package: 2 })
    );
    let other = encrypt(&test_key(1), SUITES[0], &data);
    let mut spliced = stream.clone();
    spliced[ranges[1].clone()].copy_from_slice(&other[ranges[1].clone()]);
    assert_eq!(
        open_in_reverse(&spliced),
        Err(DareError::NonceMismatch { package: 1 })
    );
    assert_eq!(open_in_reverse(&[]), Err(DareError::Truncated));

    // An empty stream is an empty plaintext only when the reader allows it.
    let key = test_key(1);
    let mut allowed = DecryptReader::new(&[][..], &key)
        .allow_empty()
        .into_packages();
    assert!(allowed.next_package().unwrap().is_none());
}
