/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * kv_layout.h - the memory layout of a uptr KV store, shared by BPF and user space.
 *
 * This file is the single definition of the layout.  The Python side never
 * copies these numbers: it reads `enum kv_layout` and `struct kv_store_value`
 * back from the BTF of every object it loads and refuses an object whose
 * layout it does not understand.
 *
 * A store is one element of a BPF_MAP_TYPE_TASK_STORAGE map.  The element
 * holds uptr pointers to pages of the owning process's memory:
 *
 *   meta        one 4 KiB page: KV_MAX_KEYS 32-bit entries indexed by key
 *   page0..7    up to KV_MAX_PAGES data pages of 4 KiB, added on demand
 *
 * Metadata entry (one __u32 per key, explicit shifts rather than bitfields so
 * that the bit order is fixed for both sides):
 *
 *   bits  0..11  page offset of the value            (0 .. 4095)
 *   bits 12..23  value size minus one                (encodes 1 .. 4096)
 *   bits 24..26  data page index                     (0 .. 7)
 *   bits 27..30  sequence count of the value's writes (odd: a write is in
 *                progress), for values that are not 4 or 8 bytes
 *   bit  31      set when the key holds a value
 *
 * Storing size-1 is what lets a 4096-byte value exist: the RFC kept the size
 * itself in 12 bits, so 4096 wrapped to 0.  An entry is written with one
 * aligned 32-bit store or compare-and-swap, so a reader sees either the old
 * or the new entry.  A value never straddles a page: offset + size <= KV_PAGE_SIZE.
 *
 * States of an entry:
 *   0                      the key holds no value (-ENOENT)
 *   bit 31 clear, not 0    the key is not available yet: user space is moving
 *                          or converting its value (-EAGAIN until it publishes)
 *   bit 31 set             the key holds a value
 *
 * Values of 4 and 8 bytes are read and written with single aligned loads and
 * stores.  Every other size is guarded by the sequence count: a writer (BPF
 * or user space) moves it from even to odd with a compare-and-swap, copies,
 * and stores it even again; a reader copies only while it is even and
 * checks that the entry did not change during the copy (a seqlock in 4 bits:
 * a reader stalled across 8 complete writes could miss them).
 */
#ifndef __KV_LAYOUT_H
#define __KV_LAYOUT_H

enum kv_layout {
	KV_MAX_KEYS		= 1024,
	KV_PAGE_SIZE		= 4096,
	KV_MAX_PAGES		= 8,
	KV_MAX_VALUE_SIZE	= 4096,

	KV_META_OFF_SHIFT	= 0,
	KV_META_OFF_MASK	= 0xfff,
	KV_META_SIZE_SHIFT	= 12,
	KV_META_SIZE_MASK	= 0xfff,
	KV_META_PAGE_SHIFT	= 24,
	KV_META_PAGE_MASK	= 0x7,
	KV_META_SEQ_SHIFT	= 27,
	KV_META_SEQ_MASK	= 0xf,
	KV_META_INIT_SHIFT	= 31,
};

#define KV_META_INIT	(1U << KV_META_INIT_SHIFT)
#define KV_META_SEQ_ONE	(1U << KV_META_SEQ_SHIFT)
#define KV_META_SEQ_ALL	((__u32)KV_META_SEQ_MASK << KV_META_SEQ_SHIFT)

/* The metadata page: entry[key] describes where key's value lives. */
struct kv_meta_page {
	__u32 entry[KV_MAX_KEYS];
};

/* A data page: values packed at the offsets the metadata names. */
struct kv_data_page {
	__u8 bytes[KV_PAGE_SIZE];
};

#ifndef __uptr
#define __uptr __attribute__((btf_type_tag("uptr")))
#endif

/*
 * The task storage value.  Each field is a user address registered with the
 * map-update syscall; the kernel pins the page and BPF sees a pointer to it
 * (NULL until the page is added).  Individual fields rather than an array so
 * that every access uses a constant offset, which uptr requires.
 */
struct kv_store_value {
	struct kv_meta_page __uptr *meta;
	struct kv_data_page __uptr *page0;
	struct kv_data_page __uptr *page1;
	struct kv_data_page __uptr *page2;
	struct kv_data_page __uptr *page3;
	struct kv_data_page __uptr *page4;
	struct kv_data_page __uptr *page5;
	struct kv_data_page __uptr *page6;
	struct kv_data_page __uptr *page7;
};

/*
 * One key of a program's manifest, as KV_KEY() in kv_store.h embeds it in
 * the object's ".uptrkv.manifest" section.  User space reads the section with
 * pyelftools and the record layout from BTF.
 */
#define KV_MANIFEST_NAME_LEN 56
#define KV_MANIFEST_SECTION ".uptrkv.manifest"

struct kv_manifest_entry {
	__u32 id;
	__u32 size;
	char name[KV_MANIFEST_NAME_LEN];
	char type[KV_MANIFEST_NAME_LEN];
};

/*
 * A known key: where a program finds a KV_KEY() value without reading the
 * metadata.  KV_KEY() gives each key a read-only global of this type; id and
 * size are set at compile time, loc by user space before the object is
 * loaded (uptrkv.known_keys).  The kernel freezes .rodata, so the verifier
 * sees loc as a constant.
 *
 *   loc  a value on page 0:      its offset in the page (below KV_PAGE_SIZE)
 *        a value on another page: offsetof(struct kv_store_value, pageN) << 16 | offset
 *
 * Page 0 gets the short form so that a program's accesses to it share one
 * load of the page pointer and add a constant to it, nothing else.  Until
 * resolved, loc is KV_KNOWN_UNRESOLVED: the metadata page at offset 65535,
 * past its end, so the verifier rejects any access through an unresolved
 * key instead of letting it read a wrong value.
 */
#define KV_KNOWN_UNRESOLVED 0xffff

struct kv_known_key {
	__u32 id;
	__u32 size;
	__u32 loc;
};

static inline __u32 kv_meta_off(__u32 e)
{
	return (e >> KV_META_OFF_SHIFT) & KV_META_OFF_MASK;
}

static inline __u32 kv_meta_size(__u32 e)
{
	return ((e >> KV_META_SIZE_SHIFT) & KV_META_SIZE_MASK) + 1;
}

static inline __u32 kv_meta_page(__u32 e)
{
	return (e >> KV_META_PAGE_SHIFT) & KV_META_PAGE_MASK;
}

static inline __u32 kv_meta_encode(__u32 page, __u32 off, __u32 size)
{
	return KV_META_INIT | (page << KV_META_PAGE_SHIFT) |
	       ((size - 1) << KV_META_SIZE_SHIFT) | (off << KV_META_OFF_SHIFT);
}

#endif /* __KV_LAYOUT_H */
