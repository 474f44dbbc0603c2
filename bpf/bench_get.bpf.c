// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Random 8-byte gets: the store against the maps people use today.  Keys
 * come from a hash of the run number (bench.h), so neither the caches'
 * prefetchers nor the branch predictors can learn them.
 *   get_hash, get_array     bpf_map_lookup_elem + load
 *   get_kv                  kv_store_get (task storage looked up once per program run)
 *   get_kv_switch           the same with the page picked by a branch on its
 *                           index, as kv_store_get did before (a copy kept
 *                           here to show the difference side by side)
 *   get_kv_prev             kv_store_get before its 8-byte fast path (one size
 *                           dispatch for 1, 2, 4 and 8 bytes; a copy kept here)
 *   get_kv_held             kv_store_get on the same keys, but the page held for
 *                           256 gets at a time (same footprint, predictable page):
 *                           what the page misprediction costs on several pages
 *   get_kv_lookup           a task storage lookup before every get
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "kv_store.h"
#include "bench.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, KV_MAX_KEYS);
	__type(key, __u32);
	__type(value, __u64);
} bench_hash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, KV_MAX_KEYS);
	__type(key, __u32);
	__type(value, __u64);
} bench_array SEC(".maps");

/*
 * kv_store_get as it was before the masks (its path for 1/2/4/8-byte values:
 * select the page by tests on its index, then one load), kept here to show
 * both side by side.
 */
static __always_inline long get_switch(struct kv_store_value *v, __u32 key,
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
	return -E2BIG;		/* (other sizes: not measured here) */
}

/*
 * kv_store_get as it was before its 8-byte fast path (one size dispatch for
 * 1, 2, 4 and 8 bytes), kept to show both side by side.
 */
/* Get a value of 1, 2, 4 or 8 bytes (size); the caller checked buf_size. */
static __always_inline long prev_get_scalar(struct kv_store_value *v, __u32 e, __u64 size, void *buf)
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

/* Copy key's value into buf (buf_size bytes); returns the value size. */
static __always_inline long prev_store_get(struct kv_store_value *v, __u32 key,
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
	if (likely(size <= 8 && !(size & (size - 1)))) {	/* 1, 2, 4, 8 */
		if (unlikely(size > buf_size))
			return -E2BIG;
		/* The allocator aligns scalars to their size: anything else is corrupt. */
		if (unlikely(kv_meta_off(e) & (size - 1)))
			return -EFAULT;
		if (likely(size >= 4))		/* single stores on both sides */
			return prev_get_scalar(v, e, size, buf);
#ifndef KV_STORE_NO_SEQCOUNT
		/* 1 and 2 bytes are written under the sequence count (kv_layout.h). */
		if (unlikely(e & KV_META_SEQ_ONE))
			return -EAGAIN;
		err = prev_get_scalar(v, e, size, buf);
		kv_barrier();
		if (likely(err > 0) && unlikely(kv_store_reread(v, key) != e))
			return -EAGAIN;
		return err;
#else
		return prev_get_scalar(v, e, size, buf);
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


BENCH(get_base, , s += bench_key(i);)

#define MAP_GET(map) {								\
	__u32 k = bench_key(i);							\
	__u64 *v = bpf_map_lookup_elem(&map, &k);				\
										\
	if (v)									\
		s += *v;							\
	else									\
		err++;								\
}

BENCH(get_hash, , MAP_GET(bench_hash))
BENCH(get_array, , MAP_GET(bench_array))

BENCH(get_kv, struct kv_store_value *kv = c->kv;, {
	bench_fresh(kv);
	__u64 x;

	if (kv_store_get(kv, bench_key(i), &x, sizeof(x)) == sizeof(x))
		s += x;
	else
		err++;
})

BENCH(get_kv_switch, struct kv_store_value *kv = c->kv;, {
	bench_fresh(kv);
	__u64 x;

	if (get_switch(kv, bench_key(i), &x, sizeof(x)) == sizeof(x))
		s += x;
	else
		err++;
})

BENCH(get_kv_prev, struct kv_store_value *kv = c->kv;, {
	bench_fresh(kv);
	__u64 x;

	if (prev_store_get(kv, bench_key(i), &x, sizeof(x)) == sizeof(x))
		s += x;
	else
		err++;
})

/*
 * Keys drawn in blocks of 64 consecutive ones (key_mask permitting), the
 * block changing every 256 runs: with the bench's layouts (bench.py) a
 * block lies on one page, so the page stays the same for 256 gets.
 */
#define bench_key_held(i)	(((bench_hash32((__u32)(i) + c->seed) & 63) |	\
				  (((__u32)(i) >> 8) << 6)) & c->mask)

BENCH(get_kv_held, struct kv_store_value *kv = c->kv;, {
	bench_fresh(kv);
	__u64 x;

	if (kv_store_get(kv, bench_key_held(i), &x, sizeof(x)) == sizeof(x))
		s += x;
	else
		err++;
})

BENCH(get_kv_lookup, , {
	struct kv_store_value *kv = kv_store_lookup(bpf_get_current_task_btf());
	__u64 x;

	if (kv && kv_store_get(kv, bench_key(i), &x, sizeof(x)) == sizeof(x))
		s += x;
	else
		err++;
})

char LICENSE[] SEC("license") = "Dual BSD/GPL";
