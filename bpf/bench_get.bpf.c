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

BENCH(get_kv_lookup, , {
	struct kv_store_value *kv = kv_store_lookup(bpf_get_current_task_btf());
	__u64 x;

	if (kv && kv_store_get(kv, bench_key(i), &x, sizeof(x)) == sizeof(x))
		s += x;
	else
		err++;
})

char LICENSE[] SEC("license") = "Dual BSD/GPL";
