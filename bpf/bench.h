/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * bench.h - the loop harness of the bench_*.bpf.c programs.
 *
 * BENCH(name, before, body) defines SEC("raw_tp") program `name`, which user
 * space runs with BPF_PROG_TEST_RUN (synchronously, in the calling task).
 * It runs `body` `iters` times and leaves the elapsed time in elapsed_ns:
 * one bpf_loop (inlined by the verifier: the loop calls the callback
 * directly) whose callback runs the body BENCH_INNER times, so the call and
 * the context loads and stores are paid once per BENCH_INNER runs.  `before`
 * runs once per callback call (load pointers from the context there).
 *
 * Inside the body: `i` is the run number (0 .. iters-1), `s` a sum to keep
 * results alive, `err` an error count, `c` the context.  bench_key(i) is a
 * key drawn from 0..key_mask by hashing the run number: no loop-carried
 * dependency between runs (each run is independent, as distinct program
 * runs are) and no pattern a branch predictor can learn.
 *
 * Every program holds exactly one bpf_loop call: clang may merge two calls
 * with different callbacks into one call site, and the verifier then does
 * not inline it (user space checks the translated code: bench.py).
 *
 * BENCH_INNER is 4, not more: the callback's copies of the body are verified
 * one after the other, and Linux 7.2's verifier keeps far more states for
 * them than 6.18's did (get_kv with 16 copies: 68,812 instructions processed
 * on 6.18, over the 1,000,000 limit on 7.2; with 4 copies 20,354 and 43,846).
 */
#ifndef __BENCH_H
#define __BENCH_H

#define BENCH_INNER 4

__u32 iters;		/* runs per program run: a multiple of BENCH_INNER */
__u32 key_mask;		/* keys are 0 .. key_mask (a power of two minus one) */
__u32 seed;
__u64 elapsed_ns;
__u64 sum;
long errors;
__u32 inner;		/* BENCH_INNER of the program that ran last */

struct bench_ctx {
	struct kv_store_value *kv;
	void *ptr;		/* another per-run pointer (a struct value) */
	__u64 sum;
	long errors;
	__u32 seed;
	__u32 mask;
};

/* A well-mixed 32-bit hash of the run number (two multiply-xorshift rounds). */
static __always_inline __u32 bench_hash32(__u32 x)
{
	x *= 0x9e3779b1;
	x ^= x >> 16;
	x *= 0x85ebca6b;
	x ^= x >> 13;
	return x;
}

#define bench_key(i)	(bench_hash32((__u32)(i) + c->seed) & c->mask)

#define BENCH(name, before, ...)	BENCH_N(name, BENCH_INNER, before, __VA_ARGS__)

/* BENCH with `n` runs per callback call (1 for bodies the verifier would walk too often). */
#define BENCH_N(name, n, before, ...)						\
static long name##_cb(__u64 idx, struct bench_ctx *c)				\
{										\
	__u64 s = c->sum;							\
	long err = c->errors;							\
	before									\
	for (__u32 j = 0; j < (n); j++) {					\
		__u64 i __attribute__((unused)) = idx * (n) + j;		\
		__VA_ARGS__							\
	}									\
	c->sum = s;								\
	c->errors = err;							\
	return 0;								\
}										\
SEC("raw_tp")									\
int name(void *ctx)								\
{										\
	struct bench_ctx c;							\
	__u64 t0;								\
										\
	/* one by one, barriers between: not a memset (no libc in BPF) */	\
	c.ptr = 0;								\
	asm volatile("" ::: "memory");						\
	c.sum = 0;								\
	asm volatile("" ::: "memory");						\
	c.errors = 0;								\
	c.seed = seed;								\
	c.mask = key_mask;							\
	c.kv = kv_store_lookup(bpf_get_current_task_btf());			\
	if (!c.kv)								\
		return 1;							\
	inner = (n);								\
	t0 = bpf_ktime_get_ns();						\
	bpf_loop(iters / (n), name##_cb, &c, 0);				\
	elapsed_ns = bpf_ktime_get_ns() - t0;					\
	sum = c.sum;								\
	errors = c.errors;							\
	return 0;								\
}

/*
 * A pointer the compiler must treat as new in every run: as in a program,
 * where it comes from that run's lookup, so clang cannot hoist addresses
 * derived from it out of the loop (and spill them to the stack).
 */
#define bench_fresh(p)	asm volatile("" : "+r"(p))

/* Keep a value alive without using it. */
#define bench_use(x)	asm volatile("" : : "r"(x))

#endif /* __BENCH_H */
