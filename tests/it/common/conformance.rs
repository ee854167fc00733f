//! The object-store conformance suite, shared by every backend's test.
#![allow(dead_code)]

use std::sync::Arc;

use bytes::Bytes;
use custody::store::{FileKind, Store};
use custody::{Error, Id};

/// Runs every documented `Store` guarantee against a fresh, empty store.
pub async fn conformance(store: Arc<dyn Store>) {
    store.create().await.expect("create");
    let id = Id::random().unwrap();
    let data = Bytes::from(
        (0..100_000u32)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>(),
    );

    // Missing objects are NotFound, for get, range and size.
    assert!(matches!(
        store.get(FileKind::Pack, &id).await,
        Err(Error::NotFound(_))
    ));
    assert!(store.size(FileKind::Pack, &id).await.is_err());
    // Deleting a missing object is not an error.
    store.delete(FileKind::Pack, &id).await.unwrap();

    for kind in [
        FileKind::Pack,
        FileKind::Index,
        FileKind::Snapshot,
        FileKind::Key,
    ] {
        store.put(kind, &id, data.clone()).await.unwrap();
        assert_eq!(store.get(kind, &id).await.unwrap(), data);
        assert_eq!(store.size(kind, &id).await.unwrap(), data.len() as u64);
        assert_eq!(
            store.get_range(kind, &id, 1000, 10).await.unwrap(),
            data.slice(1000..1010)
        );
        assert_eq!(
            store.get_range(kind, &id, 99_990, 10).await.unwrap(),
            data.slice(99_990..)
        );
        assert!(
            store.get_range(kind, &id, 99_995, 10).await.is_err(),
            "range past the end"
        );
        let listed = store.list(kind).await.unwrap();
        assert!(
            listed.contains(&(id, data.len() as u64)),
            "{kind:?} listing: {listed:?}"
        );
    }
    // Kinds are separate namespaces.
    let other = Id::random().unwrap();
    store
        .put(FileKind::Index, &other, Bytes::from_static(b"x"))
        .await
        .unwrap();
    assert!(!store
        .list(FileKind::Snapshot)
        .await
        .unwrap()
        .iter()
        .any(|(i, _)| *i == other));

    // Empty objects round-trip.
    let empty = Id::random().unwrap();
    store
        .put(FileKind::Snapshot, &empty, Bytes::new())
        .await
        .unwrap();
    assert_eq!(
        store.get(FileKind::Snapshot, &empty).await.unwrap().len(),
        0
    );

    // Replacing an object replaces it whole.
    store
        .put(FileKind::Key, &id, Bytes::from_static(b"short"))
        .await
        .unwrap();
    assert_eq!(
        store.get(FileKind::Key, &id).await.unwrap(),
        Bytes::from_static(b"short")
    );

    // Config has a fixed name; a second `create` over it is refused.
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
    assert!(matches!(store.create().await, Err(Error::AlreadyExists(_))));

    // Concurrent puts of many objects all land.
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

    // Delete removes.
    store.delete(FileKind::Pack, &id).await.unwrap();
    assert!(matches!(
        store.get(FileKind::Pack, &id).await,
        Err(Error::NotFound(_))
    ));
}
