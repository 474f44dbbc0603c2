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
struct kv_known_key *kv_anchor_known_key;
struct kv_data_page *kv_anchor_data_page;
enum kv_layout kv_anchor_layout;

/*
 * Declare a key the program uses: KV_KEY(counter, 1, __u64) gives
 *   - the compile-time constant KV_KEY_counter == 1, for kv_store_get/put;
 *   - the record {1, sizeof(__u64), "counter", "__u64"} in the object's
 *     manifest section, which the rollout checks against the TOML manifest;
 *   - the known key kv_known_counter for KV_KNOWN(kv, counter) (see below),
 *     and the type kv_key_type_counter.  The known key is a static global
 *     that clang drops unless the program uses it.
 */
#define KV_KEY(_name, _id, _type)						\
	enum { KV_KEY_##_name = (_id) };					\
	_Static_assert((_id) >= 0 && (_id) < KV_MAX_KEYS, "key id out of range");	\
	_Static_assert(sizeof(_type) >= 1 && sizeof(_type) <= KV_MAX_VALUE_SIZE,	\
		       "value size out of range");				\
	typedef __typeof__(_type) kv_key_type_##_name;				\
	static const volatile struct kv_known_key kv_known_##_name		\
	__attribute__((unused)) = { (_id), sizeof(_type), KV_KNOWN_UNRESOLVED };	\
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

/*
 * Gets of 1, 2, 4 and 8 bytes: direct loads, and (up to 4 pages) no branch
 * on the page (1 and 2 bytes still check the sequence count around the load).
 *
 * With random keys on several pages a branch on the page index mispredicts
 * about once per get (~7 ns, more than the get itself).  Instead, load the
 * value's offset from each of the store's pages and keep the one the entry
 * names with masks (arithmetic, not branches).  The tests of which pages
 * are registered do branch, but they give the same answer on every get of a
 * store, so they predict well; a store on one page pays nothing extra.
 * Beyond 4 pages the page is picked by a branch again: the same offset of 8
 * pages falls in one set of an 8-way L1 cache, and loading all of them
 * evicted more than a mispredict costs (bench_get).  Also measured on 8
 * pages, and no better than the chain of branches: a balanced tree of
 * branches, and one branch on bit 2 with masks among the 4 pages of that
 * half.  bench_get's get_kv_held (the same gets, the page held for 256 of
 * them) shows what remains on 8 pages is the misprediction itself.
 */

/* All ones if bit `bit` of idx is set, else 0; opaque so clang keeps it arithmetic. */
static __always_inline __u64 kv_bit_mask(__u64 idx, int bit)
{
	__u64 m = -((idx >> bit) & 1);

	kv_opaque(m);
	return m;
}

/* a where mask is 0, b where it is all ones. */
#define kv_select(a, b, m)	((a) ^ (((a) ^ (b)) & (m)))

#define KV_LOAD(p, word)	(*(volatile __u64 *)((void *)(p) + (word)))

/*
 * The aligned 8-byte word of page idx at `word`; 0, or -EFAULT if that page
 * is missing.  A value of 1, 2, 4 or 8 bytes is aligned to its size, so it
 * lies within one such word: every scalar size shares this one load path.
 */
static __always_inline long kv_load_word(struct kv_store_value *v, __u64 idx, __u64 word,
					 __u64 *out)
{
	struct kv_data_page *p0 = v->page0, *p1 = v->page1, *p2, *p3;
	__u64 x, x2, x3;

	kv_opaque(word);
	if (unlikely(word > KV_PAGE_SIZE - 8))
		return -EFAULT;
	if (likely(!p1)) {					/* 1 page */
		if (unlikely(idx || !p0))
			return -EFAULT;
		x = KV_LOAD(p0, word);
	} else if (likely(!v->page4)) {				/* 2 to 4 pages */
		p2 = v->page2;
		p3 = v->page3;
		if (unlikely(!p0 || idx > (p3 ? 3 : p2 ? 2 : 1)))
			return -EFAULT;
		x = kv_select(KV_LOAD(p0, word), KV_LOAD(p1, word), kv_bit_mask(idx, 0));
		if (p2) {
			x2 = KV_LOAD(p2, word);
			x3 = p3 ? KV_LOAD(p3, word) : x2;
			x = kv_select(x, kv_select(x2, x3, kv_bit_mask(idx, 0)), kv_bit_mask(idx, 1));
		}
	} else {						/* 5 to 8: a branch */
		struct kv_data_page *p = kv_store_page(v, idx);

		if (unlikely(!p))
			return -EFAULT;
		x = KV_LOAD(p, word);
	}
	*out = x;
	return 0;
}

/* Get a value of 1, 2, 4 or 8 bytes (size); the caller checked buf_size. */
static __always_inline long kv_get_scalar(struct kv_store_value *v, __u32 e, __u64 size, void *buf)
{
	__u64 off = kv_meta_off(e), x;
	long err;

	err = kv_load_word(v, kv_meta_page(e), off & ~7ULL, &x);
	if (unlikely(err))
		return err;
	x >>= (off & 7) * 8;			/* little endian */
	if (likely(size == 8))
		*(__u64 *)buf = x;
	else if (size == 4)
		*(__u32 *)buf = x;
	else if (size == 2)
		*(__u16 *)buf = x;
	else
		*(__u8 *)buf = x;
	return size;
}

/*
 * Copy chunk C (a power of two) of a value between page+off and buf if bit
 * C is set in size.  The bytes before it are exactly the higher bits of
 * size, so both offsets follow from size alone; the checks never fail for a
 * valid entry but give the verifier the constant bounds it needs
 * (umax(offset) + C within the page and buffer).  Chunks up to 64 bytes are
 * direct 8-byte (or smaller) accesses; larger ones take one helper call.
 * DIR is KV_TO_PAGE or KV_FROM_PAGE.
 */
#define KV_TO_PAGE(p, q)	(p)
#define KV_FROM_PAGE(p, q)	(q)
#define KV_MOVE(DIR, T, pd, bb)							\
	*(T *)DIR((void *)(page + (pd)), (void *)(buf + (bb))) =		\
		*(const T *)DIR((void *)(buf + (bb)), (void *)(page + (pd)))
#define KV_CHUNK(DIR, C)							\
	if (size & (C)) {							\
		__u64 b = size & ~(__u64)(2 * (C) - 1);				\
		__u64 d = off + b;						\
		kv_opaque(b);							\
		kv_opaque(d);							\
		if (unlikely(d > KV_PAGE_SIZE - (C) ||				\
			     b > KV_MAX_VALUE_SIZE - (C)))			\
			return -EFAULT;						\
		if ((C) >= 8 && (C) <= 64) {					\
			for (int w = 0; w < (C) / 8; w++)			\
				KV_MOVE(DIR, __u64, d + 8 * w, b + 8 * w);	\
		} else if ((C) == 4) {						\
			KV_MOVE(DIR, __u32, d, b);				\
		} else if ((C) == 2) {						\
			KV_MOVE(DIR, __u16, d, b);				\
		} else if ((C) == 1) {						\
			KV_MOVE(DIR, __u8, d, b);				\
		} else if (bpf_probe_read_kernel(DIR(page + d, buf + b), (C),	\
						 DIR(buf + b, page + d))) {	\
			return -EFAULT;						\
		}								\
	}

/* Values below 128 bytes, on both copy paths: direct accesses, no helper. */
#define KV_SMALL_CHUNKS(DIR)							\
	KV_CHUNK(DIR, 64) KV_CHUNK(DIR, 32) KV_CHUNK(DIR, 16) KV_CHUNK(DIR, 8)	\
	KV_CHUNK(DIR, 4) KV_CHUNK(DIR, 2) KV_CHUNK(DIR, 1)

#ifdef KV_STORE_DYNPTR
static __always_inline long kv_copy_from_page(void *buf, void *page, __u64 off, __u64 size)
{
	struct bpf_dynptr dp;

	if (size < 128) {
		KV_SMALL_CHUNKS(KV_FROM_PAGE)
		return 0;
	}
	bpf_dynptr_from_mem(page, KV_PAGE_SIZE, 0, &dp);
	return bpf_dynptr_read(buf, size, &dp, off, 0);
}

static __always_inline long kv_copy_to_page(void *page, __u64 off, const void *buf, __u64 size)
{
	struct bpf_dynptr dp;

	if (size < 128) {
		KV_SMALL_CHUNKS(KV_TO_PAGE)
		return 0;
	}
	bpf_dynptr_from_mem(page, KV_PAGE_SIZE, 0, &dp);
	return bpf_dynptr_write(&dp, off, (void *)buf, size, 0);
}
#else
/* Larger values: one bpf_probe_read_kernel(). */
static __always_inline long kv_copy_from_page(void *buf, void *page, __u64 off, __u64 size)
{
	if (size < 128) {
		KV_SMALL_CHUNKS(KV_FROM_PAGE)
		return 0;
	}
	kv_opaque(off);
	if (unlikely(off > KV_PAGE_SIZE - 1))
		return -EFAULT;
	return bpf_probe_read_kernel(buf, size, page + off);
}

/* Larger values: power-of-two chunks of 128 bytes and more by bpf_probe_read_kernel(). */
static __always_inline long kv_copy_to_page(void *page, __u64 off, const void *buf, __u64 size)
{
	KV_CHUNK(KV_TO_PAGE, 4096) KV_CHUNK(KV_TO_PAGE, 2048) KV_CHUNK(KV_TO_PAGE, 1024)
	KV_CHUNK(KV_TO_PAGE, 512) KV_CHUNK(KV_TO_PAGE, 256) KV_CHUNK(KV_TO_PAGE, 128)
	KV_SMALL_CHUNKS(KV_TO_PAGE)
	return 0;
}
#endif /* KV_STORE_DYNPTR */
#undef KV_SMALL_CHUNKS
#undef KV_CHUNK
#undef KV_MOVE

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
	if (likely(size == 8)) {	/* the common case first: one load, one store */
		__u64 x;

		off = kv_meta_off(e);
		if (unlikely(buf_size < 8))
			return -E2BIG;
		if (unlikely(off & 7))	/* the allocator aligns it: else corrupt */
			return -EFAULT;
		err = kv_load_word(v, kv_meta_page(e), off, &x);
		if (unlikely(err))
			return err;
		*(__u64 *)buf = x;
		return 8;
	}
	if (likely(size <= 4 && !(size & (size - 1)))) {	/* 1, 2, 4 */
		if (unlikely(size > buf_size))
			return -E2BIG;
		/* The allocator aligns scalars to their size: anything else is corrupt. */
		if (unlikely(kv_meta_off(e) & (size - 1)))
			return -EFAULT;
		if (likely(size >= 4))		/* single stores on both sides */
			return kv_get_scalar(v, e, size, buf);
#ifndef KV_STORE_NO_SEQCOUNT
		/* 1 and 2 bytes are written under the sequence count (kv_layout.h). */
		if (unlikely(e & KV_META_SEQ_ONE))
			return -EAGAIN;
		err = kv_get_scalar(v, e, size, buf);
		kv_barrier();
		if (likely(err > 0) && unlikely(kv_store_reread(v, key) != e))
			return -EAGAIN;
		return err;
#else
		return kv_get_scalar(v, e, size, buf);
#endif
	}
	off = kv_meta_off(e);
	page = kv_store_page(v, kv_meta_page(e));
	if (unlikely(!page))
		return -EFAULT;
	kv_opaque(size);
	if (unlikely(size > buf_size))
		return -E2BIG;
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
 * Known keys: a KV_KEY() value at the cost of a struct field plus one load.
 *
 *	if (!kv || !kv_known_ready(kv))		// once per run
 *		return 0;
 *	__u64 *calls = KV_KNOWN(kv, calls);	// typed pointer, NULL if its page is missing
 *	if (calls)
 *		(*calls)++;
 *
 * Before load, user space (uptrkv.known_keys.load) writes where the store
 * holds each known key the program uses into its .rodata; the verifier folds
 * both numbers, so an access is the load of the page pointer from the store
 * value plus the access itself: no metadata read, no page branch, no bound
 * check at run time.  While the object is open the store does not move or
 * free those keys (resize, delete and compact of them refuse); a rollout
 * loads the next version with new constants.  An object loaded without
 * resolving is rejected by the verifier at its first access.
 *
 * Accesses are plain loads and stores, as with a struct field: values of 1,
 * 2, 4 and 8 bytes are single accesses, larger ones can be torn by a
 * concurrent writer.  A BPF kv_store_delete() of a known key unpublishes it
 * for dynamic readers only; the known value stays where it is.
 */
static __always_inline void *kv_known_ptr(struct kv_store_value *v,
					  const volatile struct kv_known_key *k)
{
	__u64 loc = k->loc;
	struct kv_data_page *page;

	/*
	 * The verifier knows loc and removes the branch not taken.  The page 0
	 * load is the same in every call, so clang does it once per program
	 * run.  The other load reads an integer (the verifier types the load by
	 * the field, a uptr either way) so that clang cannot merge the two into
	 * one load from a computed address.
	 */
	page = v->page0;
	if (unlikely(loc >= KV_PAGE_SIZE)) {
		page = (struct kv_data_page *)*(unsigned long *)((void *)v + (loc >> 16));
		loc &= 0xffff;
	}
	if (unlikely(!page))
		return 0;
	return (void *)page + loc;
}

/*
 * True when the store's page 0 is registered (a store user space created
 * always has it).  Checked once per run before KV_KNOWN(), it lets clang and
 * the verifier drop the NULL checks of the known keys on page 0: each then
 * costs the load of its offset and the access itself.
 */
static __always_inline int kv_known_ready(struct kv_store_value *v)
{
	return v->page0 != 0;
}

#define KV_KNOWN(kv, name)							\
	((kv_key_type_##name *)kv_known_ptr((kv), &kv_known_##name))

/* Copy a known key's value to *dst / from *src: 0, or -EFAULT without its page. */
#define KV_KNOWN_GET(kv, name, dst)						\
	({ kv_key_type_##name *__p = KV_KNOWN(kv, name);			\
	   __p ? (__builtin_memcpy((dst), __p, sizeof(*__p)), 0) : -EFAULT; })
#define KV_KNOWN_PUT(kv, name, src)						\
	({ kv_key_type_##name *__p = KV_KNOWN(kv, name);			\
	   __p ? (__builtin_memcpy(__p, (src), sizeof(*__p)), 0) : -EFAULT; })

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
