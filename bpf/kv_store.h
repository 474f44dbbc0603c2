/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * kv_store.h - BPF side of the uptr KV store.
 *
 * A program looks the store up once per run and then only touches memory:
 *
 *	struct kv_store_value *kv = kv_store_lookup(bpf_get_current_task_btf());
 *	__u64 counter;
 *	if (kv && kv_store_get(kv, KEY_COUNTER, &counter, sizeof(counter)) == 8) {
 *		counter++;
 *		kv_store_put(kv, KEY_COUNTER, &counter, sizeof(counter));
 *	}
 *
 * Keys are created, sized and freed by user space (the owner of the pages);
 * BPF reads, overwrites and deletes existing keys.
 *
 * Return values (negative errno, as in the kernel):
 *   kv_store_get     value size (1..4096) on success
 *   kv_store_put     0 on success
 *   kv_store_delete  0 on success
 *   -EINVAL   key >= KV_MAX_KEYS
 *   -ENOENT   the key holds no value
 *   -EAGAIN   not available right now, nothing was read or written: user
 *             space is moving or converting the value (a resize, compact or
 *             rollout; it publishes it after one RCU grace period), or a
 *             value that is not 4 or 8 bytes is being written by the other
 *             side (see the sequence count in kv_layout.h); try again later
 *   -E2BIG    get: the buffer is smaller than the value
 *   -EMSGSIZE put: the buffer size differs from the value size (user space
 *             resizes values, BPF does not)
 *   -ENODATA  the store has no metadata page (not initialised)
 *   -EFAULT   the metadata names a page that is not registered or a range
 *             outside its page (a corrupted entry)
 *
 * Buffers must be 8-byte aligned (any __u64 or struct with a __u64 is); a
 * get or put with a size that is not a compile-time constant needs a buffer
 * of KV_MAX_VALUE_SIZE bytes.
 *
 * KV_STORE_NO_SEQCOUNT builds get/put without the sequence count, only as
 * the baseline of examples/bench_mutations.py: values other than 4 or 8
 * bytes can then be read torn.
 *
 * Copy paths, chosen at build time:
 *   default             runs on stock kernels: 1/2/4/8-byte values are single
 *                       loads and stores; other sizes are copied with
 *                       bpf_probe_read_kernel() (get) or in power-of-two
 *                       chunks whose bounds the verifier can check (put).
 *   KV_STORE_DYNPTR     bpf_dynptr_from_mem() over the uptr page, then
 *                       bpf_dynptr_read()/bpf_dynptr_write(); needs the
 *                       verifier patch in vm/ (stock kernels reject it).
 */
#ifndef __KV_STORE_H
#define __KV_STORE_H

#include "kv_layout.h"

#ifndef ENOENT
#define ENOENT		2
#endif
#ifndef EAGAIN
#define EAGAIN		11
#endif
#ifndef E2BIG
#define E2BIG		7
#endif
#ifndef EFAULT
#define EFAULT		14
#endif
#ifndef EINVAL
#define EINVAL		22
#endif
#ifndef ENODATA
#define ENODATA		61
#endif
#ifndef EMSGSIZE
#define EMSGSIZE	90
#endif

#ifndef likely
#define likely(x)	__builtin_expect(!!(x), 1)
#endif
#ifndef unlikely
#define unlikely(x)	__builtin_expect(!!(x), 0)
#endif

/* Hide a value from clang so that a bound check on it stays in the code. */
#define kv_opaque(x)	asm volatile("" : "+r"(x))
/* Keep memory accesses on their side of this point (the seqcount's order). */
#define kv_barrier()	asm volatile("" ::: "memory")

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct kv_store_value);
} kv_store_map SEC(".maps");

/*
 * clang emits a struct reached only through a btf_type_tag'ed pointer as a
 * forward declaration, and the kernel then treats the uptr as a scalar.
 * These untagged globals make the full definitions (and enum kv_layout,
 * which user space reads back) part of the object's BTF.
 */
struct kv_meta_page *kv_anchor_meta_page;
struct kv_manifest_entry *kv_anchor_manifest_entry;
struct kv_data_page *kv_anchor_data_page;
enum kv_layout kv_anchor_layout;

/*
 * Declare a key the program uses: KV_KEY(counter, 1, __u64) gives the
 * compile-time constant KV_KEY_counter == 1 (no lookup at run time) and
 * records {1, sizeof(__u64), "counter", "__u64"} in the object's manifest
 * section, which the rollout checks against the TOML manifest.
 */
#define KV_KEY(_name, _id, _type)						\
	enum { KV_KEY_##_name = (_id) };					\
	_Static_assert((_id) >= 0 && (_id) < KV_MAX_KEYS, "key id out of range");	\
	_Static_assert(sizeof(_type) >= 1 && sizeof(_type) <= KV_MAX_VALUE_SIZE,	\
		       "value size out of range");				\
	static const struct kv_manifest_entry __kv_manifest_##_name		\
	__attribute__((section(KV_MANIFEST_SECTION), used)) =			\
		{ (_id), sizeof(_type), #_name, #_type }

/* The calling program's one map lookup per run. */
static __always_inline struct kv_store_value *kv_store_lookup(struct task_struct *task)
{
	return bpf_task_storage_get(&kv_store_map, task, 0, 0);
}

/*
 * uptr fields must be read at constant offsets: select the page by tests on
 * the index.  Page 0 first: user space fills pages in order, so a small
 * store only ever takes the first, always predicted, branch.
 */
static __always_inline struct kv_data_page *kv_store_page(struct kv_store_value *v, __u32 idx)
{
	if (likely(idx == 0))
		return v->page0;
	if (idx == 1)
		return v->page1;
	if (idx == 2)
		return v->page2;
	if (idx == 3)
		return v->page3;
	if (idx == 4)
		return v->page4;
	if (idx == 5)
		return v->page5;
	if (idx == 6)
		return v->page6;
	if (idx == 7)
		return v->page7;
	return 0;
}

/* Read the entry of a key that holds a value; 0 with *err set otherwise. */
static __always_inline __u32 kv_store_entry(struct kv_store_value *v, __u32 key, long *err)
{
	struct kv_meta_page *meta;
	__u64 k;
	__u32 e;

	if (unlikely(key >= KV_MAX_KEYS)) {
		*err = -EINVAL;
		return 0;
	}
	meta = v->meta;
	if (unlikely(!meta)) {
		*err = -ENODATA;
		return 0;
	}
	/*
	 * clang may check one copy of key and index with another; the verifier
	 * only knows the bound of the copy it checked.  The mask (kept because
	 * clang cannot see through kv_opaque) bounds the copy actually used.
	 */
	k = key;
	kv_opaque(k);
	e = *(volatile __u32 *)&meta->entry[k & (KV_MAX_KEYS - 1)];
	if (unlikely(!(e & KV_META_INIT))) {
		*err = e ? -EAGAIN : -ENOENT;
		return 0;
	}
	return e;
}

/* The entry of key as it is now (0 if the metadata page vanished). */
static __always_inline __u32 kv_store_reread(struct kv_store_value *v, __u32 key)
{
	struct kv_meta_page *meta = v->meta;
	__u64 k = key;

	if (unlikely(!meta))
		return 0;
	kv_opaque(k);
	return *(volatile __u32 *)&meta->entry[k & (KV_MAX_KEYS - 1)];
}

/*
 * Replace key's entry old with new if nobody changed it: a 64-bit
 * compare-and-swap of the aligned pair of entries holding it (32-bit atomics
 * need -mcpu=v3).  A concurrent change of the other entry of the pair fails
 * it too; callers retry once.
 */
static __always_inline int kv_entry_cas(struct kv_store_value *v, __u32 key, __u32 old, __u32 new)
{
	struct kv_meta_page *meta = v->meta;
	__u64 k = key, cur, want, shift;
	__u64 *pair;

	if (unlikely(!meta))
		return 0;
	kv_opaque(k);
	k &= KV_MAX_KEYS - 1;
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	shift = (k & 1) * 32;
#else
	shift = (~k & 1) * 32;
#endif
	pair = (__u64 *)&meta->entry[k & (KV_MAX_KEYS - 2)];
	cur = *(volatile __u64 *)pair;
	if ((__u32)(cur >> shift) != old)
		return 0;
	want = (cur & ~(0xffffffffULL << shift)) | ((__u64)new << shift);
	return __sync_val_compare_and_swap(pair, cur, want) == cur;
}

static __always_inline int kv_entry_cas_retry(struct kv_store_value *v, __u32 key, __u32 old, __u32 new)
{
	return kv_entry_cas(v, key, old, new) || kv_entry_cas(v, key, old, new);
}

/* Entry e with its sequence count advanced by one complete write (mod 16). */
static __always_inline __u32 kv_seq_next(__u32 e)
{
	return (e & ~KV_META_SEQ_ALL) | ((e + 2 * KV_META_SEQ_ONE) & KV_META_SEQ_ALL);
}

/* End a write begun by moving key's entry to odd: store it even again. */
static __always_inline void kv_seq_end(struct kv_store_value *v, __u32 key, __u32 e)
{
	struct kv_meta_page *meta = v->meta;
	__u64 k = key;

	if (unlikely(!meta))
		return;
	kv_opaque(k);
	kv_barrier();
	*(volatile __u32 *)&meta->entry[k & (KV_MAX_KEYS - 1)] = kv_seq_next(e);
}

#ifdef KV_STORE_DYNPTR
static __always_inline long kv_copy_from_page(void *buf, void *page, __u64 off, __u64 size)
{
	struct bpf_dynptr dp;

	bpf_dynptr_from_mem(page, KV_PAGE_SIZE, 0, &dp);
	return bpf_dynptr_read(buf, size, &dp, off, 0);
}

static __always_inline long kv_copy_to_page(void *page, __u64 off, const void *buf, __u64 size)
{
	struct bpf_dynptr dp;

	bpf_dynptr_from_mem(page, KV_PAGE_SIZE, 0, &dp);
	return bpf_dynptr_write(&dp, off, (void *)buf, size, 0);
}
#else
static __always_inline long kv_copy_from_page(void *buf, void *page, __u64 off, __u64 size)
{
	kv_opaque(off);
	if (unlikely(off > KV_PAGE_SIZE - 1))
		return -EFAULT;
	return bpf_probe_read_kernel(buf, size, page + off);
}

/*
 * Copy chunk C (a power of two) if bit C is set in size.  The bytes before
 * it are exactly the higher bits of size, so both offsets follow from size
 * alone; the checks never fail for a valid entry but give the verifier the
 * constant bounds it needs (umax(offset) + C within the page and buffer).
 */
#define KV_PUT_CHUNK(C)								\
	if (size & (C)) {							\
		__u64 b = size & ~(__u64)(2 * (C) - 1);				\
		__u64 d = off + b;						\
		kv_opaque(b);							\
		kv_opaque(d);							\
		if (unlikely(d > KV_PAGE_SIZE - (C) ||				\
			     b > KV_MAX_VALUE_SIZE - (C)))			\
			return -EFAULT;						\
		if ((C) == 8)							\
			*(__u64 *)(page + d) = *(const __u64 *)(buf + b);	\
		else if ((C) == 4)						\
			*(__u32 *)(page + d) = *(const __u32 *)(buf + b);	\
		else if ((C) == 2)						\
			*(__u16 *)(page + d) = *(const __u16 *)(buf + b);	\
		else if ((C) == 1)						\
			*(__u8 *)(page + d) = *(const __u8 *)(buf + b);		\
		else if (bpf_probe_read_kernel(page + d, (C), buf + b))		\
			return -EFAULT;						\
	}

static __always_inline long kv_copy_to_page(void *page, __u64 off, const void *buf, __u64 size)
{
	KV_PUT_CHUNK(4096) KV_PUT_CHUNK(2048) KV_PUT_CHUNK(1024)
	KV_PUT_CHUNK(512) KV_PUT_CHUNK(256) KV_PUT_CHUNK(128)
	KV_PUT_CHUNK(64) KV_PUT_CHUNK(32) KV_PUT_CHUNK(16)
	KV_PUT_CHUNK(8) KV_PUT_CHUNK(4) KV_PUT_CHUNK(2) KV_PUT_CHUNK(1)
	return 0;
}
#undef KV_PUT_CHUNK
#endif /* KV_STORE_DYNPTR */

/* Copy key's value into buf (buf_size bytes); returns the value size. */
static __always_inline long kv_store_get(struct kv_store_value *v, __u32 key,
					 void *buf, __u32 buf_size)
{
	struct kv_data_page *page;
	__u64 off, size;
	long err = 0;
	__u32 e;

	e = kv_store_entry(v, key, &err);
	if (unlikely(!e))
		return err;
	size = kv_meta_size(e);
	off = kv_meta_off(e);
	page = kv_store_page(v, kv_meta_page(e));
	if (unlikely(!page))
		return -EFAULT;
	if (likely(size == 8 && buf_size >= 8)) {
		kv_opaque(off);
		if (unlikely(off > KV_PAGE_SIZE - 8))
			return -EFAULT;
		*(__u64 *)buf = *(__u64 *)((void *)page + off);
		return 8;
	}
	kv_opaque(size);
	if (unlikely(size > buf_size))
		return -E2BIG;
	if (size == 4) {
		kv_opaque(off);
		if (unlikely(off > KV_PAGE_SIZE - 4))
			return -EFAULT;
		*(__u32 *)buf = *(__u32 *)((void *)page + off);
		return 4;
	}
	if (unlikely(off + size > KV_PAGE_SIZE))
		return -EFAULT;
#ifndef KV_STORE_NO_SEQCOUNT
	if (unlikely(e & KV_META_SEQ_ONE))	/* the other side is writing it */
		return -EAGAIN;
#endif
	if (unlikely(kv_copy_from_page(buf, page, off, size)))
		return -EFAULT;
#ifndef KV_STORE_NO_SEQCOUNT
	kv_barrier();
	if (unlikely(kv_store_reread(v, key) != e))	/* written (or moved) meanwhile */
		return -EAGAIN;
#endif
	return size;
}

/* Overwrite key's value with buf; buf_size must equal the value size. */
static __always_inline long kv_store_put(struct kv_store_value *v, __u32 key,
					 const void *buf, __u32 buf_size)
{
	struct kv_data_page *page;
	__u64 off, size;
	long err = 0;
	__u32 e;

	e = kv_store_entry(v, key, &err);
	if (unlikely(!e))
		return err;
	size = kv_meta_size(e);
	if (unlikely(size != buf_size))
		return -EMSGSIZE;
	off = kv_meta_off(e);
	page = kv_store_page(v, kv_meta_page(e));
	if (unlikely(!page))
		return -EFAULT;
	if (likely(size == 8)) {
		kv_opaque(off);
		if (unlikely(off > KV_PAGE_SIZE - 8))
			return -EFAULT;
		*(__u64 *)((void *)page + off) = *(const __u64 *)buf;
		return 0;
	}
	if (size == 4) {
		kv_opaque(off);
		if (unlikely(off > KV_PAGE_SIZE - 4))
			return -EFAULT;
		*(__u32 *)((void *)page + off) = *(const __u32 *)buf;
		return 0;
	}
	if (unlikely(off + size > KV_PAGE_SIZE))
		return -EFAULT;
#ifdef KV_STORE_NO_SEQCOUNT
	return kv_copy_to_page(page, off, buf, size) ? -EFAULT : 0;
#else
	/* Other sizes: take the sequence count (even -> odd), copy, release. */
	if (unlikely((e & KV_META_SEQ_ONE) || !kv_entry_cas_retry(v, key, e, e + KV_META_SEQ_ONE)))
		return -EAGAIN;
	err = kv_copy_to_page(page, off, buf, size);
	kv_seq_end(v, key, e);
	return err ? -EFAULT : 0;
#endif
}

/*
 * Remove key.  A compare-and-swap, so a delete never wipes an entry user
 * space changed meanwhile (-EAGAIN instead); user space reclaims the space
 * after a grace period.
 */
static __always_inline long kv_store_delete(struct kv_store_value *v, __u32 key)
{
	long err = 0;
	__u32 e;

	e = kv_store_entry(v, key, &err);
	if (unlikely(!e))
		return err;
	if (unlikely((e & KV_META_SEQ_ONE) || !kv_entry_cas_retry(v, key, e, 0)))
		return -EAGAIN;
	return 0;
}

#endif /* __KV_STORE_H */
