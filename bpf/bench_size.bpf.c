// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Get and put by value size, one key per size (constant, so only the copy
 * varies): the store's kv_store_get/put against a constant-size copy from
 * or to an array map value and a hash map value (lookup + copy).  Built as
 * both copy paths: NAME.bpf.o (direct loads, probe_read, chunked stores)
 * and NAME.dynptr.bpf.o (bpf_dynptr_read/write over the uptr page).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "kv_store.h"
#include "bench.h"

struct bench_value {
	__u64 words[KV_MAX_VALUE_SIZE / 8];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bench_value);
} size_array SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bench_value);
} size_hash SEC(".maps");

__u64 buf[KV_MAX_VALUE_SIZE / 8];

/*
 * A constant-size copy as a program writes it today: 8 bytes at a time (a
 * loop, built with -fno-builtin so clang keeps it one), single accesses
 * below 8 bytes.
 */
#define COPY(dst, src, S)							\
	do {									\
		if ((S) >= 8) {							\
			for (int __k = 0; __k < (S) / 8; __k++)			\
				((__u64 *)(dst))[__k] = ((const __u64 *)(src))[__k];	\
		} else {							\
			__builtin_memcpy((dst), (src), (S));			\
		}								\
	} while (0)
const volatile __u32 key_base = 100;	/* the key of size index n is key_base + n */

/* Copies of 256 bytes and more: one run per callback call (the verifier walks every 8-byte step). */
#define INNER(S)	((S) >= 256 ? 1 : BENCH_INNER)

/* get and put of S bytes through a map value: the status quo the store is compared with. */
#define MAP_CASE(KIND, MAP, S)							\
BENCH_N(KIND##_get_##S, INNER(S), , {					\
	__u32 zero = 0;								\
	struct bench_value *v = bpf_map_lookup_elem(&MAP, &zero);		\
										\
	if (v) {								\
		COPY(buf, v, S);						\
		s++;								\
	} else									\
		err++;								\
})										\
BENCH_N(KIND##_put_##S, INNER(S), , {					\
	__u32 zero = 0;								\
	struct bench_value *v = bpf_map_lookup_elem(&MAP, &zero);		\
										\
	buf[0] = i;								\
	if (v)									\
		COPY(v, buf, S);						\
	else									\
		err++;								\
})

#define SIZE_CASE(N, S)								\
BENCH_N(kv_get_##S, INNER(S), struct kv_store_value *kv = c->kv;, {	\
	bench_fresh(kv);			\
	if (kv_store_get(kv, key_base + N, buf, S) == S)			\
		s++;								\
	else									\
		err++;								\
})										\
BENCH_N(kv_put_##S, INNER(S), struct kv_store_value *kv = c->kv;, {	\
	bench_fresh(kv);			\
	buf[0] = i;								\
	if (kv_store_put(kv, key_base + N, buf, S))				\
		err++;								\
})										\
MAP_CASE(array, size_array, S)						\
MAP_CASE(hash, size_hash, S)

SIZE_CASE(0, 1)
SIZE_CASE(1, 2)
SIZE_CASE(2, 4)
SIZE_CASE(3, 8)
SIZE_CASE(4, 16)
SIZE_CASE(5, 64)
SIZE_CASE(6, 256)
SIZE_CASE(7, 1024)
SIZE_CASE(8, 4096)

BENCH(size_base, , bench_use(i);)
BENCH_N(size_base1, 1, , bench_use(i);)

char LICENSE[] SEC("license") = "Dual BSD/GPL";
