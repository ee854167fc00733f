//! Typed repository objects (model: rustic_core's `RepoFile`): each kind of object sealed
//! under the index key says where it lives and how it is encoded, and the repository saves,
//! loads and lists every such kind through one code path. Sealing, the envelope's binding to
//! the object's name, the version check and "skip what a concurrent prune just removed" live
//! here, once.

use super::provenance::Signer;
use super::Repository;
use crate::crypto::envelope::{self, Binding, ObjectKind};
use crate::error::{Error, Result};
use crate::format::garbage::{GarbageMark, LockRecord};
use crate::format::index::IndexSegment;
use crate::format::{check_format, from_json, padded_json, DecodeError};
use crate::id::{Id, KindId, LockId, MarkId, SegmentId};
use crate::store::{object_name, FileKind};

/// An object sealed under the index key `K_index` (docs/FORMAT.md §4, §6, §14b).
pub trait SealedObject: Sized + Send {
    /// The kind of id it is stored under.
    type Id: KindId;
    /// Its folder in the repository.
    const FILE: FileKind;
    /// Its kind in the envelope (bound into the AAD: an object moved to another folder does
    /// not open).
    const KIND: ObjectKind;
    /// Whether it carries a signature (docs/FORMAT.md §17.4). Restore requests and approvals
    /// do not: a key holder below quorum, which makes them, has no signing key.
    const SIGNED: bool = true;
    fn encode(&self) -> Vec<u8>;
    /// Decodes and checks the format version.
    fn decode(plain: &[u8]) -> Result<Self, DecodeError>;
}

impl SealedObject for IndexSegment {
    type Id = SegmentId;
    const FILE: FileKind = FileKind::Index;
    const KIND: ObjectKind = ObjectKind::Index;
    fn encode(&self) -> Vec<u8> {
        IndexSegment::encode(self)
    }
    fn decode(plain: &[u8]) -> Result<Self, DecodeError> {
        IndexSegment::decode(plain)
    }
}

impl SealedObject for GarbageMark {
    type Id = MarkId;
    const FILE: FileKind = FileKind::Garbage;
    const KIND: ObjectKind = ObjectKind::Garbage;
    fn encode(&self) -> Vec<u8> {
        padded_json(self, 4096)
    }
    fn decode(plain: &[u8]) -> Result<Self, DecodeError> {
        let m: GarbageMark = from_json("garbage mark", plain)?;
        check_format("garbage mark", m.format)?;
        Ok(m)
    }
}

impl SealedObject for LockRecord {
    type Id = LockId;
    const FILE: FileKind = FileKind::Lock;
    const KIND: ObjectKind = ObjectKind::Lock;
    fn encode(&self) -> Vec<u8> {
        padded_json(self, 1024)
    }
    fn decode(plain: &[u8]) -> Result<Self, DecodeError> {
        let l: LockRecord = from_json("lock", plain)?;
        check_format("lock", l.format)?;
        Ok(l)
    }
}

impl Repository {
    fn binding<'a, T: SealedObject>(&'a self, id: &'a Id, zero: &'a Id) -> Binding<'a> {
        Binding {
            repo: &self.config.body.repository,
            kind: T::KIND,
            container: zero,
            object: id,
            key_id: &self.config.body.secret_id,
        }
    }

    /// Signs `obj` (docs/FORMAT.md §17), seals it under the index key and stores it under `id`.
    pub fn save_object<T: SealedObject>(&self, id: &T::Id, obj: &T) -> Result<()> {
        let zero = Id::default();
        let plain = if T::SIGNED {
            self.sign_body(T::KIND, id, obj.encode())
        } else {
            obj.encode()
        };
        let sealed = envelope::seal_object(
            &self.secrets.index_key,
            &self.binding::<T>(id, &zero),
            &plain,
        )?;
        self.store().put(T::FILE, id, sealed.into())
    }

    /// Reads, opens and decodes one object. A missing object is [`Error::NotFound`]; one that
    /// does not open or decode is an integrity failure naming it, and one whose signer this
    /// client does not accept is [`Error::Untrusted`].
    pub fn load_object<T: SealedObject>(&self, id: &T::Id) -> Result<T> {
        self.load_object_signed(id).map(|(obj, _)| obj)
    }

    /// [`Repository::load_object`], and who signed it (`None` in a legacy repository).
    pub fn load_object_signed<T: SealedObject>(&self, id: &T::Id) -> Result<(T, Option<Signer>)> {
        let bytes = self.store().get(T::FILE, id)?;
        self.open_object_signed(id, &bytes)
    }

    /// Opens, verifies and decodes the sealed bytes of object `id`, wherever they were read.
    pub(super) fn open_object_signed<T: SealedObject>(
        &self,
        id: &T::Id,
        bytes: &[u8],
    ) -> Result<(T, Option<Signer>)> {
        let name = object_name(T::FILE, id);
        let zero = Id::default();
        let plain = envelope::open_object(
            &self.secrets.index_key,
            &self.binding::<T>(id, &zero),
            bytes,
        )
        .map_err(|e| Error::integrity(&name, e))?;
        let (body, signer) = if T::SIGNED {
            self.verify_body(T::KIND, &name, id, &plain)?
        } else {
            (plain, None)
        };
        let obj = T::decode(&body).map_err(|e| Error::integrity(&name, e))?;
        Ok((obj, signer))
    }

    /// Lists the objects of a kind and loads each, in listing order, handing every result to
    /// `f`. An object removed between the listing and its read (a prune superseded or swept
    /// it) is skipped; other failures go to `f`, which decides whether they stop the walk.
    pub fn for_each_object<T: SealedObject>(
        &self,
        f: impl FnMut(T::Id, Result<T>) -> Result<()>,
    ) -> Result<()> {
        self.for_each_object_where(|_| true, f)
    }

    /// [`Repository::for_each_object`] for the listed objects that `wanted` accepts; the
    /// others are not read at all.
    pub fn for_each_object_where<T: SealedObject>(
        &self,
        wanted: impl Fn(&T::Id) -> bool,
        f: impl FnMut(T::Id, Result<T>) -> Result<()>,
    ) -> Result<()> {
        let ids: Vec<T::Id> = self
            .object_ids::<T>()?
            .into_iter()
            .filter(|id| wanted(id))
            .collect();
        self.for_each_listed_object(&ids, f)
    }

    /// The stored objects of a kind, in listing order.
    pub fn object_ids<T: SealedObject>(&self) -> Result<Vec<T::Id>> {
        Ok(self
            .store()
            .list(T::FILE)?
            .into_iter()
            .map(|(id, _)| T::Id::from(id))
            .collect())
    }

    /// [`Repository::for_each_object`] over objects listed already (by
    /// [`Repository::object_ids`], at the same time as something else).
    pub fn for_each_listed_object<T: SealedObject>(
        &self,
        ids: &[T::Id],
        mut f: impl FnMut(T::Id, Result<T>) -> Result<()>,
    ) -> Result<()> {
        // A window at a time: round trips overlap, and memory holds a window, not every object.
        for window in ids.chunks(super::in_flight::WINDOW) {
            let loaded = super::in_flight::read_all(window, |id| self.load_object::<T>(id));
            for (id, loaded) in window.iter().zip(loaded) {
                match loaded {
                    Err(Error::NotFound(_)) => {}
                    loaded => f(*id, loaded)?,
                }
            }
        }
        Ok(())
    }

    /// Every object of a kind, in listing order; the first that fails stops the load.
    pub fn load_objects<T: SealedObject>(&self) -> Result<Vec<(T::Id, T)>> {
        let mut out = Vec::new();
        self.for_each_object::<T>(|id, obj| {
            out.push((id, obj?));
            Ok(())
        })?;
        Ok(out)
    }
}
