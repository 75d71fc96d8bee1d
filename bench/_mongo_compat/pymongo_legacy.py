"""PyMongo 3 methods that Hyperopt's ``mongoexp`` calls, rebuilt on PyMongo 4.

Each wrapper keeps the PyMongo 3 calling convention that ``mongoexp`` relies
on and forwards to the PyMongo 4 method that replaced it:

=====================================  =======================================
PyMongo 3 call                         PyMongo 4 replacement
=====================================  =======================================
``Collection.insert(doc | docs)``      ``insert_one`` / ``insert_many``
``Collection.update(q, u, multi=)``    ``update_one`` / ``update_many``
``Collection.remove(q | _id)``         ``delete_many`` / ``delete_one``
``Collection.find_and_modify(...)``    ``find_one_and_update``
``Collection.count(q)``                ``count_documents``
``Cursor.count()``                     ``count_documents`` on the cursor's
                                       collection and filter
=====================================  =======================================

Only the process that calls :func:`install` is affected; PyMongo and Hyperopt
on disk stay untouched.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pymongo import ReturnDocument
from pymongo.collection import Collection
from pymongo.cursor import Cursor

_MARKER = "_hyperopt_legacy_shim"


def _insert(
    self: Collection, doc_or_docs: Mapping[str, Any] | Iterable[Mapping[str, Any]], **_legacy: Any
) -> Any:
    """``insert``: one document → its ``_id``; an iterable → list of ``_id``.

    Like PyMongo 3, the ``_id`` is also set on the caller's document(s).
    Legacy options such as ``check_keys`` are accepted and ignored.
    """
    if isinstance(doc_or_docs, Mapping):
        return self.insert_one(doc_or_docs).inserted_id
    return self.insert_many(list(doc_or_docs)).inserted_ids


def _update(
    self: Collection,
    spec: Mapping[str, Any],
    document: Mapping[str, Any],
    upsert: bool = False,
    multi: bool = False,
    **_legacy: Any,
) -> dict[str, Any]:
    """``update``: first matching document, or all of them with ``multi=True``."""
    method = self.update_many if multi else self.update_one
    return method(spec, document, upsert=upsert).raw_result


def _remove(
    self: Collection, spec_or_id: Any = None, multi: bool = True, **_legacy: Any
) -> dict[str, Any]:
    """``remove``: a filter document, or a bare ``_id``; ``None`` removes all."""
    if spec_or_id is None:
        spec_or_id = {}
    spec = spec_or_id if isinstance(spec_or_id, Mapping) else {"_id": spec_or_id}
    method = self.delete_many if multi else self.delete_one
    return method(spec).raw_result


def _find_and_modify(
    self: Collection,
    query: Mapping[str, Any],
    update: Mapping[str, Any],
    upsert: bool = False,
    sort: Any = None,
    new: bool = False,
    fields: Any = None,
    **_legacy: Any,
) -> Any:
    """``find_and_modify`` with an update: the document before, or after if
    ``new=True``; ``None`` when nothing matched (also on upsert with
    ``new=False``, as in PyMongo 3)."""
    return self.find_one_and_update(
        query,
        update,
        projection=fields,
        sort=sort,
        upsert=upsert,
        return_document=ReturnDocument.AFTER if new else ReturnDocument.BEFORE,
    )


def _collection_count(
    self: Collection, filter: Mapping[str, Any] | None = None, **kwargs: Any
) -> int:
    """``Collection.count``: number of documents matching ``filter``."""
    return self.count_documents(filter or {}, **kwargs)


def _cursor_count(self: Cursor, with_limit_and_skip: bool = False) -> int:
    """``Cursor.count``: documents matching the cursor's filter.

    Reads the filter from the cursor's private ``_spec``: PyMongo 4 has no
    public accessor.  Hyperopt never sets a limit or skip, so asking to honour
    them is refused rather than silently ignored.
    """
    if with_limit_and_skip:
        raise NotImplementedError("Cursor.count(with_limit_and_skip=True)")
    return self.collection.count_documents(self._spec or {})


def install() -> None:
    """Add the legacy methods to PyMongo's classes (idempotent)."""
    if getattr(Collection, _MARKER, False):
        return
    Collection.insert = _insert
    Collection.update = _update
    Collection.remove = _remove
    Collection.find_and_modify = _find_and_modify
    Collection.count = _collection_count
    Cursor.count = _cursor_count
    setattr(Collection, _MARKER, True)
