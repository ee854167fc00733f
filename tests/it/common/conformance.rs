//! The object-store conformance suite, shared by every backend's test: one function per
//! guarantee that `custody::store::Store` documents, each run against the same fresh store.
#![allow(dead_code)]

use std::sync::Arc;

use bytes::Bytes;
use custody::store::{FileKind, Store};
use custody::{Error, Id};

type S = Arc<dyn Store>;

fn data() -> Bytes {
    Bytes::from(
        (0..100_000u32)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>(),
    )
}

/// Runs every guarantee, in order, against a fresh, empty store; a failure names the
/// guarantee it broke.
pub async fn conformance(store: S) {
    store.create().await.expect("create");
    missing_objects_are_not_found(&store).await;
    deleting_a_missing_object_is_no_error(&store).await;
    every_kind_round_trips_whole_and_by_range(&store).await;
    a_range_past_the_end_is_an_error(&store).await;
    a_range_into_a_used_buffer_holds_that_range_only(&store).await;
    kinds_are_separate_namespaces(&store).await;
    empty_objects_round_trip(&store).await;
    a_put_replaces_an_object_whole(&store).await;
    config_has_one_name_and_create_refuses_to_overwrite_it(&store).await;
    concurrent_puts_all_land(&store).await;
    delete_removes(&store).await;
}

/// `get` and `size` of a missing object are errors; `get` says [`Error::NotFound`].
async fn missing_objects_are_not_found(store: &S) {
    let id = Id::random().unwrap();
    assert!(
        matches!(
            store.get(FileKind::Pack, &id).await,
            Err(Error::NotFound(_))
        ),
        "get of a missing object must be NotFound"
    );
    assert!(
        store.size(FileKind::Pack, &id).await.is_err(),
        "size of a missing object must fail"
    );
}

/// Deleting a missing object is not an error (a sweep may repeat a delete).
async fn deleting_a_missing_object_is_no_error(store: &S) {
    let id = Id::random().unwrap();
    store
        .delete(FileKind::Pack, &id)
        .await
        .expect("deleting a missing object");
}

/// What `put` stores, `get` returns whole, `get_range` in part, `size` measures and `list`
/// shows with its size, for every kind.
async fn every_kind_round_trips_whole_and_by_range(store: &S) {
    let data = data();
    for kind in [
        FileKind::Pack,
        FileKind::Index,
        FileKind::Snapshot,
        FileKind::Key,
    ] {
        let id = Id::random().unwrap();
        store.put(kind, &id, data.clone()).await.unwrap();
        assert_eq!(store.get(kind, &id).await.unwrap(), data, "{kind:?} get");
        assert_eq!(
            store.size(kind, &id).await.unwrap(),
            data.len() as u64,
            "{kind:?} size"
        );
        assert_eq!(
            store.get_range(kind, &id, 1000, 10).await.unwrap(),
            data.slice(1000..1010),
            "{kind:?} range"
        );
        assert_eq!(
            store.get_range(kind, &id, 99_990, 10).await.unwrap(),
            data.slice(99_990..),
            "{kind:?} range to the end"
        );
        let listed = store.list(kind).await.unwrap();
        assert!(
            listed.contains(&(id, data.len() as u64)),
            "{kind:?} listing: {listed:?}"
        );
    }
}

/// A range that reaches past the object's end is an error, never a short answer.
async fn a_range_past_the_end_is_an_error(store: &S) {
    let id = Id::random().unwrap();
    store.put(FileKind::Pack, &id, data()).await.unwrap();
    assert!(
        store
            .get_range(FileKind::Pack, &id, 99_995, 10)
            .await
            .is_err(),
        "range past the end"
    );
}

/// `get_range_into` answers as `get_range` does, whatever the buffer held before (longer or
/// shorter than the range), and a range past the end is an error there too.
async fn a_range_into_a_used_buffer_holds_that_range_only(store: &S) {
    let id = Id::random().unwrap();
    let data = data();
    store.put(FileKind::Pack, &id, data.clone()).await.unwrap();
    let mut buf = vec![0xAA; 50_000];
    for (offset, length) in [(1000, 10), (5, 60_000), (99_990, 10), (0, 0)] {
        buf = store
            .get_range_into(FileKind::Pack, &id, offset, length, buf)
            .await
            .unwrap();
        assert_eq!(
            buf,
            data.slice(offset as usize..(offset + length) as usize),
            "range {offset}+{length} into a used buffer"
        );
    }
    assert!(
        store
            .get_range_into(FileKind::Pack, &id, 99_995, 10, buf)
            .await
            .is_err(),
        "range past the end"
    );
}

/// Objects of one kind never show up in another kind's listing.
async fn kinds_are_separate_namespaces(store: &S) {
    let other = Id::random().unwrap();
    store
        .put(FileKind::Index, &other, Bytes::from_static(b"x"))
        .await
        .unwrap();
    let snapshots = store.list(FileKind::Snapshot).await.unwrap();
    assert!(
        !snapshots.iter().any(|(i, _)| *i == other),
        "an index object listed as a snapshot"
    );
}

/// An empty object is an object.
async fn empty_objects_round_trip(store: &S) {
    let empty = Id::random().unwrap();
    store
        .put(FileKind::Snapshot, &empty, Bytes::new())
        .await
        .unwrap();
    assert_eq!(
        store.get(FileKind::Snapshot, &empty).await.unwrap().len(),
        0
    );
}

/// `put` of an existing name replaces the object whole: no tail of the old one is left.
async fn a_put_replaces_an_object_whole(store: &S) {
    let id = Id::random().unwrap();
    store.put(FileKind::Key, &id, data()).await.unwrap();
    store
        .put(FileKind::Key, &id, Bytes::from_static(b"short"))
        .await
        .unwrap();
    assert_eq!(
        store.get(FileKind::Key, &id).await.unwrap(),
        Bytes::from_static(b"short")
    );
}

/// The config has one fixed name whatever id is given, and `create` refuses a location that
/// already holds a repository config.
async fn config_has_one_name_and_create_refuses_to_overwrite_it(store: &S) {
    store
        .put(FileKind::Config, &Id::default(), Bytes::from_static(b"{}"))
        .await
        .unwrap();
    assert_eq!(
        store
            .get(FileKind::Config, &Id::random().unwrap())
            .await
            .unwrap(),
        Bytes::from_static(b"{}")
    );
    assert!(
        matches!(store.create().await, Err(Error::AlreadyExists(_))),
        "create over an existing config"
    );
}

/// Many puts at once all land, each whole.
async fn concurrent_puts_all_land(store: &S) {
    let mut tasks = Vec::new();
    let mut ids = Vec::new();
    for i in 0..32u8 {
        let id = Id::random().unwrap();
        ids.push(id);
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            s.put(FileKind::Pack, &id, Bytes::from(vec![i; 1000])).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(
            store.get(FileKind::Pack, id).await.unwrap(),
            Bytes::from(vec![i as u8; 1000])
        );
    }
}

/// After `delete`, `get` says NotFound.
async fn delete_removes(store: &S) {
    let id = Id::random().unwrap();
    store.put(FileKind::Pack, &id, data()).await.unwrap();
    store.delete(FileKind::Pack, &id).await.unwrap();
    assert!(matches!(
        store.get(FileKind::Pack, &id).await,
        Err(Error::NotFound(_))
    ));
}
