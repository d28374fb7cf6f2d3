/*
 * zramfs._zpages: batch LZ4 / LZ4HC page loops in C, for zramfs's data path.
 *
 * Why this exists: python-lz4 is called once per 4 KiB page (argument
 * parsing, a bytes object and a GIL release/reacquire per call) and has no
 * batch call, so a 1 MiB request costs 256 Python-level calls and the second
 * CPU cannot help.  Here one call handles a whole request: the page loop runs
 * with the GIL released and may be split over a few pthreads.
 *
 * LZ4 fast mode is the kernel's: zram's lz4 backend calls the kernel's
 * LZ4_compress_fast, whose parse of a page differs from liblz4 1.9.4's (see
 * "the kernel's LZ4 parse" below), so fast-mode blocks come from this
 * module's own kz_compress, and every page has the length the kernel's zram
 * gives it.  liblz4 is linked for LZ4HC and decompression.
 *
 * LZ4HC: byte-identical with python-lz4 4.4.5 (which bundles LZ4 1.9.4, the
 * version of Debian 12's liblz4 we link against): python-lz4's
 * lz4.block.compress does
 *     LZ4_resetStreamHC(&s, level); LZ4_compress_HC_continue(&s, src, dst, n, bound)
 * on a fresh stream on its C stack.  We call LZ4_initStreamHC once per chunk,
 * then LZ4_resetStreamHC_fast per page (LZ4's documented way to start a new
 * stream on an initialised state; it skips the 256 KiB memset and gives the
 * same output, as tests/test_zpages.py checks against python-lz4 on
 * thousands of pages), and compress into 4095 bytes (dstCapacity =
 * PAGE_SIZE - 1) rather than LZ4_compressBound(4096): LZ4's output-limit
 * checks are only necessary conditions of the final size, so a block that
 * fits in 4095 bytes is the same block either way, and one that does not fit
 * makes LZ4 return 0, i.e. "store the page raw".  (The kernel's zram here has
 * no lz4hc to compare with.)
 *
 * Global state is only the pool of parked helper threads that batch calls
 * hand their chunks to (run_jobs); every call allocates its own LZ4 states,
 * so calls from any number of Python threads are independent.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <limits.h>
#include <stdlib.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>
#include <stdint.h>
#include <string.h>
#include <errno.h>
#include <sys/mman.h>
#include <time.h>

#include <lz4.h>
#include <lz4hc.h>

#ifdef ZRAMFS_ZSTD
/* zstd, compiled in from the amalgamated zstd.c of the python-zstandard
 * release installed beside us (scripts/setup.sh fetches it; setup.py adds it
 * when present), so our frames are byte for byte what the codec's
 * python-zstandard calls make: zstd's output at a level can change between
 * releases (Debian's libzstd 1.5.4 and 1.5.7 differ on ~30% of this data's
 * pages at level 3).  ZSTD_STATIC_LINKING_ONLY: ZSTD_getParams and
 * ZSTD_CCtx_setParams, for the kernel's zstd_get_params. */
#define ZSTD_STATIC_LINKING_ONLY
#include "zstd.h"
#endif

#define PAGE 4096
#define MAX_THREADS 8

#if LZ4_VERSION_NUMBER < 10900
#error "zramfs._zpages needs LZ4 >= 1.9.0 (LZ4_initStream, LZ4_resetStreamHC_fast)"
#endif

/* ------------------------------------------------------------------ helpers */

/* The kernel's page_same_filled(): every 8-byte word of the page equal; the
 * last word is compared first (cheap reject of most pages).  memcpy keeps the
 * loads legal for a page that is not 8-byte aligned in its buffer. */
static int
same_filled(const char *p)
{
    uint64_t first, w;
    memcpy(&first, p, 8);
    memcpy(&w, p + PAGE - 8, 8);
    if (w != first)
        return 0;
    for (size_t i = 8; i < PAGE - 8; i += 8) {
        memcpy(&w, p + i, 8);
        if (w != first)
            return 0;
    }
    return 1;
}

/* A Python int as a C int: OverflowError outside INT_MIN..INT_MAX (like the
 * "i" format python-lz4 parses acceleration/compression with). */
static int
int_arg(PyObject *o, const char *name, int *out)
{
    long v = PyLong_AsLong(o);
    if (v == -1 && PyErr_Occurred()) {
        if (PyErr_ExceptionMatches(PyExc_OverflowError)) {
            PyErr_Format(PyExc_OverflowError, "%s does not fit in a C int", name);
        }
        return -1;
    }
    if (v < INT_MIN || v > INT_MAX) {
        PyErr_Format(PyExc_OverflowError, "%s does not fit in a C int", name);
        return -1;
    }
    *out = (int)v;
    return 0;
}

/* A Python int as Py_ssize_t, clamped (range errors are reported by the
 * caller as ValueError). */
static int
ssize_arg(PyObject *o, Py_ssize_t *out)
{
    Py_ssize_t v = PyNumber_AsSsize_t(o, NULL);
    if (v == -1 && PyErr_Occurred())
        return -1;
    *out = v;
    return 0;
}

static int
nargs_ok(const char *fname, Py_ssize_t nargs, Py_ssize_t want)
{
    if (nargs == want)
        return 1;
    PyErr_Format(PyExc_TypeError, "%s() takes exactly %zd positional arguments (%zd given)",
                 fname, want, nargs);
    return 0;
}

/* `count` pages from byte `pos` lie within a buffer of `len` bytes; else
 * ValueError naming `fname`, and 0. */
static int
pages_in(const char *fname, Py_ssize_t pos, Py_ssize_t count, Py_ssize_t len)
{
    if (pos < 0 || count < 0) {
        PyErr_Format(PyExc_ValueError, "%s: pos (%zd) and count (%zd) must be >= 0", fname, pos,
                     count);
        return 0;
    }
    if (pos > len || count > (len - pos) / PAGE) {
        PyErr_Format(PyExc_ValueError,
                     "%s: pos + count*4096 (%zd + %zd*4096) is beyond the buffer (%zd bytes)",
                     fname, pos, count, len);
        return 0;
    }
    return 1;
}

/* The helper threads of run_jobs, kept from one call to the next: starting
 * and joining a pthread per call cost ~48 us here, a fifth of a 512 KiB
 * read's decompression; handing a job to a parked helper costs a futex wake.
 *
 * One caller at a time owns the pool (pool_mu, taken with trylock: a second
 * concurrent caller, e.g. a worker thread while the trio thread is in a
 * batch, does not wait for it but starts pthreads of its own, as every call
 * did before).  A helper never touches Python objects.  After fork() the
 * child has none of the parent's helpers: pool_pid tells, and the pool is
 * set up anew in the child (if fork() caught another thread holding
 * pool_mu, trylock fails in the child forever and it keeps to pthreads per
 * call, which is still correct). */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    void *(*fn)(void *);
    void *arg;
    int state; /* 0 idle, 1 job posted, 2 job done */
    int started;
} Helper;

static Helper helpers[MAX_THREADS];
static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
static pid_t pool_pid;

static void *
helper_main(void *p)
{
    Helper *h = p;
    pthread_mutex_lock(&h->mu);
    for (;;) {
        while (h->state != 1)
            pthread_cond_wait(&h->cv, &h->mu);
        pthread_mutex_unlock(&h->mu);
        h->fn(h->arg);
        pthread_mutex_lock(&h->mu);
        h->state = 2;
        pthread_cond_broadcast(&h->cv);
    }
    return NULL;
}

/* A detached pthread running fn(arg) with every signal blocked (so signals
 * keep going to the interpreter's threads); it lives as long as the process.
 * Returns whether it started. */
static int
start_detached(void *(*fn)(void *), void *arg)
{
    sigset_t all, old;
    sigfillset(&all);
    int masked = pthread_sigmask(SIG_BLOCK, &all, &old) == 0;
    pthread_attr_t attr;
    int ok = pthread_attr_init(&attr) == 0;
    if (ok) {
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_t tid;
        ok = pthread_create(&tid, &attr, fn, arg) == 0;
        pthread_attr_destroy(&attr);
    }
    if (masked)
        pthread_sigmask(SIG_SETMASK, &old, NULL);
    return ok;
}

/* Start helper i if it is not running (signals blocked, so they keep going
 * to the interpreter's threads; detached: it lives as long as the process).
 * Returns whether it runs.  Called with pool_mu held. */
static int
helper_ready(int i)
{
    Helper *h = &helpers[i];
    if (h->started)
        return 1;
    if (pthread_mutex_init(&h->mu, NULL) != 0)
        return 0;
    if (pthread_cond_init(&h->cv, NULL) != 0) {
        pthread_mutex_destroy(&h->mu);
        return 0;
    }
    h->state = 0;
    if (!start_detached(helper_main, h)) {
        pthread_cond_destroy(&h->cv);
        pthread_mutex_destroy(&h->mu);
        return 0;
    }
    h->started = 1;
    return 1;
}

/* Run jobs[0..n-1] (each `size` bytes, starting with `fn`'s argument):
 * job 0 on the calling thread, the others on the pool's helpers (or, when
 * another caller holds the pool, on pthreads created here).  A job no
 * thread could be found for runs on the calling thread too.  Returns when
 * every job is done.  Called without the GIL. */
static void
run_jobs(void *(*fn)(void *), void *jobs, size_t size, int n)
{
    pthread_t tid[MAX_THREADS];
    int started[MAX_THREADS] = {0}; /* 1: own pthread, 2: pool helper */
    char *base = jobs;
    int pooled = 0;

    if (n > 1 && pthread_mutex_trylock(&pool_mu) == 0) {
        pooled = 1;
        pid_t pid = getpid();
        if (pool_pid != pid) { /* first use, or a fork()ed child */
            for (int i = 0; i < MAX_THREADS; i++)
                helpers[i].started = 0;
            pool_pid = pid;
        }
        for (int i = 1; i < n; i++) {
            if (!helper_ready(i))
                continue;
            Helper *h = &helpers[i];
            pthread_mutex_lock(&h->mu);
            h->fn = fn;
            h->arg = base + (size_t)i * size;
            h->state = 1;
            pthread_cond_broadcast(&h->cv);
            pthread_mutex_unlock(&h->mu);
            started[i] = 2;
        }
    }
    else if (n > 1) {
        sigset_t all, old;
        sigfillset(&all);
        int masked = pthread_sigmask(SIG_BLOCK, &all, &old) == 0;
        for (int i = 1; i < n; i++)
            started[i] = pthread_create(&tid[i], NULL, fn, base + (size_t)i * size) == 0;
        if (masked)
            pthread_sigmask(SIG_SETMASK, &old, NULL);
    }
    fn(base);
    for (int i = 1; i < n; i++) {
        if (!started[i])
            fn(base + (size_t)i * size);
    }
    for (int i = 1; i < n; i++) {
        if (started[i] == 1) {
            pthread_join(tid[i], NULL);
        }
        else if (started[i] == 2) {
            Helper *h = &helpers[i];
            pthread_mutex_lock(&h->mu);
            while (h->state != 2)
                pthread_cond_wait(&h->cv, &h->mu);
            h->state = 0;
            pthread_mutex_unlock(&h->mu);
        }
    }
    if (pooled)
        pthread_mutex_unlock(&pool_mu);
}

/* How many chunks: `threads` capped at `count` and MAX_THREADS (>= 1). */
static int
chunk_count(int threads, Py_ssize_t count)
{
    Py_ssize_t n = threads;
    if (n > count)
        n = count;
    if (n > MAX_THREADS)
        n = MAX_THREADS;
    return n < 1 ? 1 : (int)n;
}

/* Chunk i of n over count items: [lo, hi). */
static void
chunk_bounds(Py_ssize_t count, int n, int i, Py_ssize_t *lo, Py_ssize_t *hi)
{
    *lo = count * i / n;
    *hi = count * (i + 1) / n;
}

/* ------------------------------------------------ the kernel's LZ4 parse */

/* zram's lz4 backend calls the kernel's LZ4_compress_fast (lib/lz4, an LZ4
 * 1.8 port) with an 8 KiB destination, which compresses an input under
 * 64 KiB with a 16-bit hash table.  LZ4 1.9.4 (liblz4, python-lz4) makes
 * other choices: its fast path for small inputs and its streams (32-bit
 * table) pick different matches, and it looks for a match one byte nearer
 * the end of the input.  On the benchmark's data that made 3.3 % of pages
 * 1-5 bytes longer or shorter than the kernel's, and 8 % more huge pages;
 * so `mm_stat` differed from a kernel zram's on the same data.  kz_compress
 * is this module's own implementation of the same greedy parse, so every
 * block has the kernel's length (tests/test_zpages.py compares page by page
 * with /dev/zram0 when the kernel has lz4):
 *
 *   - hash of the 4 bytes at a position: (u32 * 2654435761) >> (32 - 13),
 *     a table of 8192 16-bit offsets, zeroed per call (so an empty slot
 *     points at offset 0, which is then compared like any candidate);
 *   - the search step starts at 1 and grows by one every 64 misses
 *     (acceleration << 6 initial count); no match may start past
 *     len - 12, no match extends into the last 5 bytes;
 *   - a match is extended backwards over equal bytes, then encoded; after
 *     it, the positions ip - 2 and ip are hashed and ip is tried at once;
 *   - the rest is literals.
 * Output is a plain LZ4 block (any LZ4 decoder reads it); no output limit
 * is applied, so `dst` must hold KZ_BOUND(len) bytes. */
#define KZ_HASHLOG 13
#define KZ_MFLIMIT 12
#define KZ_LASTLITERALS 5
#define KZ_SKIPTRIGGER 6
#define KZ_MAX_INPUT 65535 /* 16-bit offsets */
#define KZ_ACCELERATION_SAFE 65537u /* LZ4_ACCELERATION_MAX */
#define KZ_BOUND(n) ((n) + (n) / 255 + 16)
#define KZ_TABLE_BYTES (sizeof(uint16_t) << KZ_HASHLOG)
_Static_assert(sizeof(LZ4_stream_t) >= KZ_TABLE_BYTES, "an LZ4 state holds the table");

static inline uint32_t
kz_read32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static inline uint32_t
kz_hash(const uint8_t *p)
{
    return (kz_read32(p) * 2654435761U) >> (32 - KZ_HASHLOG);
}

/* How many bytes from a (and b < a) are equal, at most up to `limit`. */
static inline size_t
kz_count(const uint8_t *a, const uint8_t *b, const uint8_t *limit)
{
    const uint8_t *start = a;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    while (limit - a >= 8) {
        uint64_t x, y;
        memcpy(&x, a, 8);
        memcpy(&y, b, 8);
        if (x != y)
            return (size_t)(a - start) + ((unsigned)__builtin_ctzll(x ^ y) >> 3);
        a += 8;
        b += 8;
    }
#endif
    while (a < limit && *a == *b) {
        a++;
        b++;
    }
    return (size_t)(a - start);
}

/* A length's extra bytes after its 4-bit field: 255s, then the remainder. */
static inline uint8_t *
kz_length(uint8_t *op, size_t n)
{
    for (; n >= 255; n -= 255)
        *op++ = 255;
    *op++ = (uint8_t)n;
    return op;
}

/* One LZ4 block of src[0:len] (len <= KZ_MAX_INPUT) into dst, as the
 * kernel's LZ4_compress_fast makes it; returns its length.  `table`:
 * KZ_TABLE_BYTES of scratch. */
static size_t
kz_compress(const uint8_t *src, size_t len, uint8_t *dst, int acceleration, uint16_t *table)
{
    const uint8_t *const iend = src + len;
    const uint8_t *ip = src, *anchor = src;
    uint8_t *op = dst;
    unsigned acc = acceleration < 1 ? 1u : (unsigned)acceleration;
    /* The kernel's search counter is acc << 6 in 32 bits.  Where that wraps
     * below one step (acc a multiple of 2^26) its search stands still and
     * emits matches at offset 0: a corrupt block; this machine's zram0 with
     * algorithm_params level=67108864 reads the page back wrong.  There we
     * use LZ4's maximum acceleration (65537: all literals) instead.  Every
     * other acceleration, wrapped or not, parses as the kernel's does. */
    if ((acc << KZ_SKIPTRIGGER) >> KZ_SKIPTRIGGER == 0)
        acc = KZ_ACCELERATION_SAFE;

    if (len >= KZ_MFLIMIT + 1) {
        const uint8_t *const mflimit = iend - KZ_MFLIMIT;
        const uint8_t *const matchlimit = iend - KZ_LASTLITERALS;
        memset(table, 0, KZ_TABLE_BYTES);
        ip++; /* position 0 is in the table already: offset 0 */
        uint32_t fh = kz_hash(ip);
        for (;;) {
            const uint8_t *match;
            uint8_t *token;
            /* Find a match, skipping faster the longer there is none. */
            const uint8_t *next = ip;
            unsigned step = 1, tries = acc << KZ_SKIPTRIGGER;
            do {
                uint32_t h = fh;
                ip = next;
                next += step;
                step = tries++ >> KZ_SKIPTRIGGER;
                if (next > mflimit)
                    goto last_literals;
                match = src + table[h];
                fh = kz_hash(next);
                table[h] = (uint16_t)(ip - src);
            } while (kz_read32(match) != kz_read32(ip));
            while (ip > anchor && match > src && ip[-1] == match[-1]) {
                ip--;
                match--;
            }
            size_t lit = (size_t)(ip - anchor);
            token = op++;
            if (lit >= 15) {
                *token = 15 << 4;
                op = kz_length(op, lit - 15);
            }
            else {
                *token = (uint8_t)(lit << 4);
            }
            memcpy(op, anchor, lit);
            op += lit;
            for (;;) { /* a match, and more for as long as the next position matches */
                size_t off = (size_t)(ip - match);
                *op++ = (uint8_t)off;
                *op++ = (uint8_t)(off >> 8);
                size_t ml = kz_count(ip + 4, match + 4, matchlimit);
                ip += 4 + ml;
                if (ml >= 15) {
                    *token += 15;
                    op = kz_length(op, ml - 15);
                }
                else {
                    *token += (uint8_t)ml;
                }
                anchor = ip;
                if (ip > mflimit)
                    goto last_literals;
                table[kz_hash(ip - 2)] = (uint16_t)(ip - 2 - src);
                uint32_t h = kz_hash(ip);
                match = src + table[h];
                table[h] = (uint16_t)(ip - src);
                if (kz_read32(match) != kz_read32(ip))
                    break;
                token = op++;
                *token = 0;
            }
            fh = kz_hash(++ip);
        }
    }
last_literals:;
    size_t run = (size_t)(iend - anchor);
    if (run >= 15) {
        *op++ = 15 << 4;
        op = kz_length(op, run - 15);
    }
    else {
        *op++ = (uint8_t)(run << 4);
    }
    memcpy(op, anchor, run);
    op += run;
    return (size_t)(op - dst);
}

/* -------------------------------------------------------------- compression */

/* What a CompressJob makes. */
enum { KIND_LZ4 = 0, KIND_LZ4HC = 1, KIND_ZSTD = 2 };

typedef struct {
    const char *src;      /* first page of this chunk */
    char *out;            /* its first out slot */
    unsigned char *sizes; /* its first uint16 LE size */
    Py_ssize_t n;         /* pages in this chunk */
    int param;            /* acceleration (fast), level (HC, zstd) */
    int kind;             /* KIND_*: LZ4_compress_fast, LZ4_compress_HC, zstd */
    void *state;          /* LZ4_stream_t or LZ4_streamHC_t, this chunk's own (zstd: unused) */
} CompressJob;

#ifdef ZRAMFS_ZSTD
/* Each thread's zstd contexts, made on its first zstd page and freed when
 * the thread ends (the key's destructor): a context must never be shared by
 * threads, and making one per call costs more than a page.  The compression
 * context keeps the parameters of the level it last compressed at. */
static pthread_key_t zstd_key;

typedef struct {
    ZSTD_CCtx *cctx;
    ZSTD_DCtx *dctx;
    int level;
} ZstdThread;

static void
zstd_key_free(void *p)
{
    ZstdThread *t = p;
    ZSTD_freeCCtx(t->cctx);
    ZSTD_freeDCtx(t->dctx);
    free(t);
}

/* This thread's contexts (each still NULL until made), or NULL (out of memory). */
static ZstdThread *
zstd_thread(void)
{
    ZstdThread *t = pthread_getspecific(zstd_key);
    if (t == NULL) {
        t = calloc(1, sizeof(*t));
        if (t == NULL || pthread_setspecific(zstd_key, t) != 0) {
            free(t);
            return NULL;
        }
        t->level = INT_MIN;
    }
    return t;
}

/* This thread's compression context set up for `level`, or NULL (out of memory). */
static ZSTD_CCtx *
zstd_cctx(int level)
{
    ZstdThread *t = zstd_thread();
    if (t == NULL)
        return NULL;
    if (t->cctx == NULL && (t->cctx = ZSTD_createCCtx()) == NULL)
        return NULL;
    if (t->level != level) {
        /* The kernel's zstd_get_params(level, PAGE_SIZE): ZSTD_getParams,
         * content size on, checksum off.  ZSTD_compress2 with them set makes
         * the frames of ZSTD_compress_advanced (the kernel's
         * zstd_compress_cctx; deprecated here) at the same speed. */
        ZSTD_CCtx_reset(t->cctx, ZSTD_reset_session_and_parameters);
        t->level = INT_MIN;
        if (ZSTD_isError(ZSTD_CCtx_setParams(t->cctx, ZSTD_getParams(level, PAGE, 0))))
            return NULL;
        t->level = level;
    }
    return t->cctx;
}

/* A zstd frame of the page `p` into `d` (PAGE - 1 bytes of room) at `level`:
 * its length, or PAGE when it would not be shorter than a page ("store the
 * page raw").  No context (out of memory) also gives PAGE: the page is then
 * stored raw, which is correct, only not compressed. */
static int
zstd_page(const char *p, char *d, int level)
{
    ZSTD_CCtx *cctx = zstd_cctx(level);
    if (cctx == NULL)
        return PAGE;
    size_t r = ZSTD_compress2(cctx, d, PAGE - 1, p, PAGE); /* (each call a new frame) */
    return ZSTD_isError(r) ? PAGE : (int)r;
}
#endif

static void *
compress_job(void *arg)
{
    CompressJob *j = arg;
    if (j->kind == KIND_LZ4HC)
        LZ4_initStreamHC(j->state, sizeof(LZ4_streamHC_t));
    for (Py_ssize_t k = 0; k < j->n; k++) {
        const char *p = j->src + k * PAGE;
        char *d = j->out + k * PAGE;
        int size;
        if (same_filled(p)) {
            size = 0;
        } else {
#ifdef ZRAMFS_ZSTD
            if (j->kind == KIND_ZSTD) {
                size = zstd_page(p, d, j->param);
            } else
#endif
            if (j->kind == KIND_LZ4HC) {
                LZ4_resetStreamHC_fast(j->state, j->param);
                int r = LZ4_compress_HC_continue(j->state, p, d, PAGE, PAGE - 1);
                size = r > 0 ? r : PAGE;
            } else {
                uint8_t block[KZ_BOUND(PAGE)];
                size_t n = kz_compress((const uint8_t *)p, PAGE, block, j->param, j->state);
                if (n < PAGE)
                    memcpy(d, block, n);
                size = n < PAGE ? (int)n : PAGE;
            }
        }
        j->sizes[2 * k] = (unsigned char)(size & 0xff);
        j->sizes[2 * k + 1] = (unsigned char)(size >> 8);
    }
    return NULL;
}

static PyObject *
compress_pages(const char *fname, PyObject *const *args, Py_ssize_t nargs, int kind)
{
    Py_ssize_t pos, count;
    int param, threads;
    Py_buffer src;
    PyObject *out = NULL, *sizes = NULL, *result = NULL;
    CompressJob *jobs = NULL;
    char *states = NULL;

    if (!nargs_ok(fname, nargs, 5))
        return NULL;
    if (ssize_arg(args[1], &pos) < 0 || ssize_arg(args[2], &count) < 0
        || int_arg(args[3], kind == KIND_LZ4 ? "acceleration" : "level", &param) < 0
        || int_arg(args[4], "threads", &threads) < 0)
        return NULL;
    if (PyObject_GetBuffer(args[0], &src, PyBUF_SIMPLE) < 0)
        return NULL;

    if (!pages_in(fname, pos, count, src.len))
        goto done;
    if (threads < 1) {
        PyErr_Format(PyExc_ValueError, "%s: threads must be >= 1, not %d", fname, threads);
        goto done;
    }

    out = PyByteArray_FromStringAndSize(NULL, count * PAGE);
    sizes = PyBytes_FromStringAndSize(NULL, count * 2);
    if (out == NULL || sizes == NULL)
        goto done;

    if (count > 0) {
        int n = chunk_count(threads, count);
        size_t state_size = kind == KIND_LZ4HC ? sizeof(LZ4_streamHC_t)
                            : kind == KIND_LZ4 ? sizeof(LZ4_stream_t) : 1;
        jobs = PyMem_Malloc(sizeof(CompressJob) * (size_t)n);
        states = PyMem_Malloc(state_size * (size_t)n);
        if (jobs == NULL || states == NULL) {
            PyErr_NoMemory();
            goto done;
        }
        char *obuf = PyByteArray_AS_STRING(out);
        unsigned char *sbuf = (unsigned char *)PyBytes_AS_STRING(sizes);
        const char *sp = (const char *)src.buf + pos;
        for (int i = 0; i < n; i++) {
            Py_ssize_t lo, hi;
            chunk_bounds(count, n, i, &lo, &hi);
            jobs[i].src = sp + lo * PAGE;
            jobs[i].out = obuf + lo * PAGE;
            jobs[i].sizes = sbuf + 2 * lo;
            jobs[i].n = hi - lo;
            jobs[i].param = param;
            jobs[i].kind = kind;
            jobs[i].state = states + state_size * (size_t)i;
        }
        Py_BEGIN_ALLOW_THREADS
        run_jobs(compress_job, jobs, sizeof(CompressJob), n);
        Py_END_ALLOW_THREADS
    }
    result = PyTuple_Pack(2, out, sizes);

done:
    PyMem_Free(jobs);
    PyMem_Free(states);
    Py_XDECREF(out);
    Py_XDECREF(sizes);
    PyBuffer_Release(&src);
    return result;
}

PyDoc_STRVAR(lz4_compress_pages_doc,
"lz4_compress_pages($module, src, pos, count, acceleration, threads, /)\n"
"--\n"
"\n"
"LZ4 fast-mode compression of `count` 4 KiB pages in one call; returns\n"
"tuple[bytearray, bytes].\n"
"\n"
"Page k (0 <= k < count) is src[pos + k*4096 : pos + (k+1)*4096]; `pos` need\n"
"not be page-aligned.  Returns (out, sizes): `out` is a bytearray of\n"
"count*4096 bytes, `sizes` a bytes of `count` little-endian uint16\n"
"(memoryview(sizes).cast('H') reads them).  For page k:\n"
"  - same-filled (the kernel's page_same_filled(): all 8-byte words equal,\n"
"    first word compared with the last word first): size 0, nothing\n"
"    compressed, out slot k left as it was (unspecified content);\n"
"  - else the block the kernel's LZ4_compress_fast makes of it (kz_compress,\n"
"    the same bytes as lz4_compress_page): a block of 4096 bytes or more\n"
"    gives size 4096 (\"store the page raw\"; out slot k is then\n"
"    unspecified);\n"
"  - else size = the block's length (1..4095), at out[k*4096 : k*4096+size].\n"
"`acceleration` as the kernel takes it: < 1 counts as 1; it must fit in a\n"
"C int (OverflowError otherwise).\n"
"\n"
"Threads and the GIL: the whole page loop runs with the GIL released, so\n"
"other Python threads (and trio) go on meanwhile.  `threads` >= 1 splits the\n"
"pages into min(threads, count, 8) contiguous chunks: chunk 0 runs on the\n"
"calling thread, the others on the module's parked helper threads (started\n"
"on first use; pthreads created for this call while another caller uses\n"
"them; a chunk no thread can be had for runs on the calling thread), so\n"
"both CPUs can work on one request.  `src` is held (PyBUF_SIMPLE) for the\n"
"whole call.\n"
"\n"
"Errors, raised before any work: ValueError if pos < 0, count < 0,\n"
"pos + count*4096 > len(src) or threads < 1.  count == 0 gives\n"
"(bytearray(), b'').");

static PyObject *
lz4_compress_pages(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs)
{
    return compress_pages("lz4_compress_pages", args, nargs, KIND_LZ4);
}

PyDoc_STRVAR(lz4hc_compress_pages_doc,
"lz4hc_compress_pages($module, src, pos, count, level, threads, /)\n"
"--\n"
"\n"
"Returns tuple[bytearray, bytes].\n"
"\n"
"lz4_compress_pages with LZ4HC at `level` instead of LZ4 fast mode: same\n"
"pages, same (out, sizes) result, same same-filled / store-raw (4096) /\n"
"compressed (1..4095) sizes, same errors, same GIL release and `threads`\n"
"splitting.  Every block is byte-identical to lz4.block.compress(page,\n"
"mode='high_compression', compression=level, store_size=False).  `level` is\n"
"passed to LZ4, which treats < 1 as 9 (the default) and > 12 as 12.  Each\n"
"chunk has its own LZ4HC state (~256 KiB, allocated per call), initialised\n"
"once and restarted per page with LZ4_resetStreamHC_fast.");

static PyObject *
lz4hc_compress_pages(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs)
{
    return compress_pages("lz4hc_compress_pages", args, nargs, KIND_LZ4HC);
}

/* ------------------------------------------- compression ahead of a commit */

/* A batch's tail compressed on a background thread while the caller, which
 * compressed the head itself, commits what is ready (lz4_compress_begin).
 * The trio thread's store of a page (zsmalloc, the slot table) is Python and
 * holds the GIL; the helper never needs it.  So one CPU compresses while the
 * other stores, where lz4_compress_pages(threads=2) made the stores wait for
 * both halves.
 *
 * One background helper (bg_*), long-lived like the run_jobs pool and for
 * the same reason (a pthread per batch costs ~48 us), serves one batch at a
 * time, and queues up to BG_QUEUE: a begin() while the queue is full
 * compresses its pages at once on the calling thread (GIL released), so
 * correctness never waits for it.
 * Progress is published under bg_mu every BG_STEP pages; bg_mu and bg_cv are
 * static and never destroyed, so a waiter may free a job as soon as it has
 * seen it finished under bg_mu (the helper touches the job only under bg_mu
 * after that point... and not at all once `finished` is set). */
#define BG_STEP 16

typedef struct {
    PyObject_HEAD
    Py_buffer src;        /* held until the helper is done */
    PyObject *out;        /* bytearray count*4096 */
    PyObject *sizes;      /* bytearray count*2, uint16 LE */
    CompressJob job;      /* the whole range; the helper walks it in steps */
    Py_ssize_t done;      /* pages finished (under bg_mu) */
    int finished;         /* the helper will not touch this job again (under bg_mu) */
    int waiting;          /* a caller sleeps on bg_cv for it (under bg_mu) */
    int have_src;
    long long finished_ns; /* CLOCK_MONOTONIC when the last page was done (under bg_mu) */
    pid_t pid;            /* the process that began it (a fork()ed child has no helper) */
    LZ4_stream_t state;   /* the helper's hash table */
} Pending;

static long long mono_ns(void);

static pthread_mutex_t bg_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t bg_cv = PTHREAD_COND_INITIALIZER;
/* Jobs posted and not yet finished, oldest (the one being worked on) first
 * (under bg_mu).  Two: a deferred write's batch and the next request's tail
 * (ZramDevice._write_pages_nowait), so the helper goes from one to the other
 * without waiting for the trio thread. */
#define BG_QUEUE 2
static Pending *bg_queue[BG_QUEUE];
static int bg_queued;
static int bg_started;
static pid_t bg_pid;

static void *
bg_main(void *unused)
{
    (void)unused;
    pthread_mutex_lock(&bg_mu);
    for (;;) {
        while (bg_queued == 0)
            pthread_cond_wait(&bg_cv, &bg_mu);
        Pending *pj = bg_queue[0];
        const CompressJob j = pj->job;
        pthread_mutex_unlock(&bg_mu);
        Py_ssize_t k = 0;
        for (;;) {
            CompressJob step = j;
            step.src = j.src + k * PAGE;
            step.out = j.out + k * PAGE;
            step.sizes = j.sizes + 2 * k;
            step.n = j.n - k < BG_STEP ? j.n - k : BG_STEP;
            compress_job(&step);
            k += step.n;
            pthread_mutex_lock(&bg_mu);
            pj->done = k;
            if (k == j.n) {
                pj->finished_ns = mono_ns();
                pj->finished = 1;
                for (int q = 1; q < bg_queued; q++)
                    bg_queue[q - 1] = bg_queue[q];
                bg_queue[--bg_queued] = NULL;
            }
            if (pj->waiting)
                pthread_cond_broadcast(&bg_cv);
            if (k == j.n)
                break; /* bg_mu held: back to waiting for a job */
            pthread_mutex_unlock(&bg_mu);
        }
    }
    return NULL;
}

/* Hand `pj` to the helper (starting it if needed); 0 if it cannot be had
 * (busy with another job, or no thread).  Called without the GIL. */
static int
bg_post(Pending *pj)
{
    pid_t pid = getpid();
    if (bg_pid != 0 && bg_pid != pid) {
        /* A fork()ed child: the parent's helper is not here, and bg_mu may
         * have been caught held.  The child's only thread sets up anew. */
        pthread_mutex_init(&bg_mu, NULL);
        pthread_cond_init(&bg_cv, NULL);
        bg_queued = 0;
        bg_started = 0;
    }
    pthread_mutex_lock(&bg_mu);
    bg_pid = pid;
    if (bg_queued == BG_QUEUE) {
        pthread_mutex_unlock(&bg_mu);
        return 0;
    }
    if (!bg_started) {
        if (!start_detached(bg_main, NULL)) {
            pthread_mutex_unlock(&bg_mu);
            return 0;
        }
        bg_started = 1;
    }
    bg_queue[bg_queued++] = pj;
    pthread_cond_broadcast(&bg_cv);
    pthread_mutex_unlock(&bg_mu);
    return 1;
}

/* Wait (GIL released by the caller) until `want` pages are done or the job
 * is finished; returns the pages done. */
static Py_ssize_t
bg_wait(Pending *pj, Py_ssize_t want)
{
    pthread_mutex_lock(&bg_mu);
    while (!pj->finished && pj->done < want) {
        pj->waiting = 1;
        pthread_cond_wait(&bg_cv, &bg_mu);
    }
    pj->waiting = 0;
    Py_ssize_t done = pj->done;
    pthread_mutex_unlock(&bg_mu);
    return done;
}

static void
pending_dealloc(Pending *pj)
{
    if (pj->have_src) {
        if (pj->pid == getpid()) {
            Py_BEGIN_ALLOW_THREADS
            bg_wait(pj, pj->job.n);
            Py_END_ALLOW_THREADS
        }
        PyBuffer_Release(&pj->src);
    }
    Py_XDECREF(pj->out);
    Py_XDECREF(pj->sizes);
    Py_TYPE(pj)->tp_free((PyObject *)pj);
}

PyDoc_STRVAR(pending_wait_doc,
"wait($self, want, /)\n"
"--\n"
"\n"
"Block, with the GIL released, until at least min(want, count) pages are\n"
"compressed; returns how many are (pages 0..n-1 of the range, in order:\n"
"their `out` slots and `sizes` entries are final and will not change).\n"
"RuntimeError in a fork()ed child for a batch begun in the parent (no\n"
"helper there to finish it).");

static PyObject *
pending_wait(Pending *pj, PyObject *arg)
{
    Py_ssize_t want = PyLong_AsSsize_t(arg);
    if (want == -1 && PyErr_Occurred())
        return NULL;
    if (want > pj->job.n)
        want = pj->job.n;
    if (pj->pid != getpid()) {
        /* Begun before a fork(): this process has no helper working on it. */
        PyErr_SetString(PyExc_RuntimeError,
                        "Pending.wait: the batch was begun in another process");
        return NULL;
    }
    Py_ssize_t done;
    pthread_mutex_lock(&bg_mu);
    done = pj->done;
    pthread_mutex_unlock(&bg_mu);
    if (done < want) {
        Py_BEGIN_ALLOW_THREADS
        done = bg_wait(pj, want);
        Py_END_ALLOW_THREADS
    }
    return PyLong_FromSsize_t(done);
}

static PyMethodDef pending_methods[] = {
    {"wait", (PyCFunction)pending_wait, METH_O, pending_wait_doc},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef pending_members[] = {
    {"out", T_OBJECT_EX, offsetof(Pending, out), READONLY,
     "bytearray of count*4096: page k's block at [k*4096, k*4096 + size)"},
    {"sizes", T_OBJECT_EX, offsetof(Pending, sizes), READONLY,
     "bytearray of count uint16 LE sizes, as lz4_compress_pages gives them"},
    {"count", T_PYSSIZET, offsetof(Pending, job.n), READONLY, "pages in the range"},
    {"finished_ns", T_LONGLONG, offsetof(Pending, finished_ns), READONLY,
     "time.monotonic_ns() when the last page was done (0 before; read it after wait(count))"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject PendingType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "zramfs._zpages.Pending",
    .tp_basicsize = sizeof(Pending),
    .tp_dealloc = (destructor)pending_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Pages being compressed by lz4_compress_begin or zstd_compress_begin (wait() for them).",
    .tp_methods = pending_methods,
    .tp_members = pending_members,
};

PyDoc_STRVAR(lz4_compress_begin_doc,
"lz4_compress_begin($module, src, pos, count, acceleration, /)\n"
"--\n"
"\n"
"Start compressing `count` pages of `src` from `pos` on the module's\n"
"background helper thread; returns a Pending at once.\n"
"\n"
"The blocks and sizes are exactly lz4_compress_pages's (same-filled: 0,\n"
"incompressible: 4096), in Pending.out / Pending.sizes; Pending.wait(want)\n"
"says how many leading pages are final.  The helper publishes progress every\n"
"16 pages and never needs the GIL, so the caller can store finished pages\n"
"(holding the GIL) while later ones are compressed.  `src` is held until\n"
"the helper is done; dropping the Pending waits for that.  The helper takes\n"
"batches in order, queueing two: when two are already posted, or if no\n"
"thread can be started, the pages are compressed before this returns (GIL\n"
"released).  Errors as lz4_compress_pages's, raised before any work.");

static PyObject *
compress_begin(const char *fname, PyObject *const *args, Py_ssize_t nargs, int kind)
{
    Py_ssize_t pos, count;
    int param;
    if (!nargs_ok(fname, nargs, 4))
        return NULL;
    if (ssize_arg(args[1], &pos) < 0 || ssize_arg(args[2], &count) < 0
        || int_arg(args[3], kind == KIND_LZ4 ? "acceleration" : "level", &param) < 0)
        return NULL;
    Pending *pj = PyObject_New(Pending, &PendingType);
    if (pj == NULL)
        return NULL;
    pj->out = pj->sizes = NULL;
    pj->have_src = 0;
    pj->done = 0;
    pj->finished = 0;
    pj->finished_ns = 0;
    pj->waiting = 0;
    pj->job.n = 0;
    pj->pid = getpid();
    if (PyObject_GetBuffer(args[0], &pj->src, PyBUF_SIMPLE) < 0) {
        Py_DECREF(pj);
        return NULL;
    }
    pj->have_src = 1;
    pj->finished = 1; /* until posted: dealloc must not wait */
    if (!pages_in(fname, pos, count, pj->src.len)) {
        Py_DECREF(pj);
        return NULL;
    }
    pj->out = PyByteArray_FromStringAndSize(NULL, count * PAGE);
    pj->sizes = PyByteArray_FromStringAndSize(NULL, count * 2);
    if (pj->out == NULL || pj->sizes == NULL) {
        Py_DECREF(pj);
        return NULL;
    }
    pj->job.src = (const char *)pj->src.buf + pos;
    pj->job.out = PyByteArray_AS_STRING(pj->out);
    pj->job.sizes = (unsigned char *)PyByteArray_AS_STRING(pj->sizes);
    pj->job.n = count;
    pj->job.param = param;
    pj->job.kind = kind;
    pj->job.state = &pj->state;
    if (count == 0) {
        pj->finished_ns = mono_ns();
        return (PyObject *)pj;
    }
    pj->finished = 0;
    int posted;
    Py_BEGIN_ALLOW_THREADS
    posted = bg_post(pj);
    if (!posted) {
        compress_job(&pj->job);
        pj->done = count;
        pj->finished_ns = mono_ns();
        pj->finished = 1;
    }
    Py_END_ALLOW_THREADS
    return (PyObject *)pj;
}

static PyObject *
lz4_compress_begin(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs)
{
    return compress_begin("lz4_compress_begin", args, nargs, KIND_LZ4);
}

#ifdef ZRAMFS_ZSTD
PyDoc_STRVAR(zstd_compress_pages_doc,
"zstd_compress_pages($module, src, pos, count, level, threads, /)\n"
"--\n"
"\n"
"Returns tuple[bytearray, bytes].\n"
"\n"
"lz4_compress_pages with zstd at `level` instead of LZ4: same pages, same\n"
"(out, sizes) result, same same-filled (0) / store-raw (4096) / compressed\n"
"(1..4095) sizes, same errors, same GIL release and `threads` splitting.\n"
"Each frame is the kernel's backend_zstd one, made with the parameters of\n"
"ZSTD_getParams(level, 4096, 0) (content size in the header, no checksum),\n"
"and byte-identical to python-zstandard's when it bundles the same zstd\n"
"(ZSTD_VERSION).  `level` as zstd takes it (0: the default, 3).  Each\n"
"thread keeps its own context.");

static PyObject *
zstd_compress_pages(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs)
{
    return compress_pages("zstd_compress_pages", args, nargs, KIND_ZSTD);
}

PyDoc_STRVAR(zstd_compress_begin_doc,
"zstd_compress_begin($module, src, pos, count, level, /)\n"
"--\n"
"\n"
"lz4_compress_begin with zstd_compress_pages's frames: the same helper\n"
"thread and queue, the same Pending.");

static PyObject *
zstd_compress_begin(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs)
{
    return compress_begin("zstd_compress_begin", args, nargs, KIND_ZSTD);
}
#endif

/* ------------------------------------------------------------ decompression */

/* One object to decode: where it is and how long (0: a zero page, 4096: a
 * page stored raw, else an LZ4 block). */
typedef struct {
    const char *p;
    Py_ssize_t len;
} Obj;

typedef struct {
    const Obj *objs;       /* this chunk's first object */
    char *dst;             /* its first output page */
    Py_ssize_t first;      /* index of bufs[0] in objs */
    Py_ssize_t n;          /* objects in this chunk */
    Py_ssize_t bad;        /* index (in objs) of the first bad block, or -1 */
    int ret;               /* what LZ4_decompress_safe returned for it (zstd: -1) */
    int kind;              /* KIND_LZ4 (LZ4 blocks, also LZ4HC's) or KIND_ZSTD (frames) */
} DecompressJob;

#ifdef ZRAMFS_ZSTD
/* A zstd frame of `len` bytes into one page: PAGE if it is exactly one
 * frame that claims and decodes to 4096 bytes (what ZstdCodec.decompress
 * accepts), else -1 (no context: out of memory, also -1). */
static int
zstd_decode_page(const char *src, Py_ssize_t len, char *dst)
{
    ZstdThread *t = zstd_thread();
    if (t == NULL || (t->dctx == NULL && (t->dctx = ZSTD_createDCtx()) == NULL))
        return -1;
    if (ZSTD_getFrameContentSize(src, (size_t)len) != PAGE
        || ZSTD_findFrameCompressedSize(src, (size_t)len) != (size_t)len)
        return -1;
    size_t r = ZSTD_decompressDCtx(t->dctx, dst, PAGE, src, (size_t)len);
    return r == PAGE ? PAGE : -1;
}
#endif

/* One object into one 4096-byte page: 0 bytes -> zeros, 4096 bytes -> copy,
 * else it must decode to exactly 4096 bytes.  Returns 4096 on success, else
 * what LZ4_decompress_safe returned (-1 for a block too long to pass, and
 * for any bad zstd frame). */
static int
decompress_one(int kind, const char *src, Py_ssize_t len, char *dst)
{
    if (len == 0) {
        memset(dst, 0, PAGE);
        return PAGE;
    }
    if (len == PAGE) {
        memcpy(dst, src, PAGE);
        return PAGE;
    }
    if (len > INT_MAX)
        return -1;
#ifdef ZRAMFS_ZSTD
    if (kind == KIND_ZSTD)
        return zstd_decode_page(src, len, dst);
#else
    (void)kind;
#endif
    return LZ4_decompress_safe(src, dst, (int)len, PAGE);
}

static void *
decompress_job(void *arg)
{
    DecompressJob *j = arg;
    j->bad = -1;
    for (Py_ssize_t k = 0; k < j->n; k++) {
        int r = decompress_one(j->kind, j->objs[k].p, j->objs[k].len, j->dst + k * PAGE);
        if (r != PAGE) {
            j->bad = j->first + k;
            j->ret = r;
            break;
        }
    }
    return NULL;
}

static void
release_buffers(Py_buffer *bufs, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++)
        PyBuffer_Release(&bufs[i]);
}

static PyObject *
corrupt_error(int kind, Py_ssize_t page, Py_ssize_t len, int ret)
{
    if (kind == KIND_ZSTD) {
        PyErr_Format(PyExc_ValueError,
                     "zstd: page %zd: corrupt frame (%zd bytes; not one frame of 4096 bytes)",
                     page, len);
        return NULL;
    }
    PyErr_Format(PyExc_ValueError,
                 "lz4: page %zd: corrupt block (%zd bytes; LZ4_decompress_safe returned %d, "
                 "expected 4096)",
                 page, len, ret);
    return NULL;
}

/* The result of decoding objs[0..n-1] into one new bytes of n pages, with
 * the GIL released around the work (on `threads` threads), or NULL with
 * ValueError naming the lowest bad page.  Called with the GIL. */
static PyObject *
decode_into_bytes(const Obj *objs, Py_ssize_t n, int threads, int kind)
{
    PyObject *out = PyBytes_FromStringAndSize(NULL, n * PAGE);
    if (out == NULL || n == 0)
        return out;
    int nj = chunk_count(threads, n);
    DecompressJob *jobs = PyMem_Malloc(sizeof(DecompressJob) * (size_t)nj);
    if (jobs == NULL) {
        Py_DECREF(out);
        return PyErr_NoMemory();
    }
    char *obuf = PyBytes_AS_STRING(out);
    for (int i = 0; i < nj; i++) {
        Py_ssize_t lo, hi;
        chunk_bounds(n, nj, i, &lo, &hi);
        jobs[i].objs = objs + lo;
        jobs[i].dst = obuf + lo * PAGE;
        jobs[i].first = lo;
        jobs[i].n = hi - lo;
        jobs[i].bad = -1;
        jobs[i].ret = 0;
        jobs[i].kind = kind;
    }
    Py_BEGIN_ALLOW_THREADS
    run_jobs(decompress_job, jobs, sizeof(DecompressJob), nj);
    Py_END_ALLOW_THREADS
    for (int i = 0; i < nj; i++) {
        if (jobs[i].bad >= 0) {
            /* Chunks are in page order, so the first bad chunk holds the
             * lowest bad page whatever the thread count. */
            corrupt_error(kind, jobs[i].bad, objs[jobs[i].bad].len, jobs[i].ret);
            Py_CLEAR(out);
            break;
        }
    }
    PyMem_Free(jobs);
    return out;
}

PyDoc_STRVAR(lz4_decompress_pages_doc,
"lz4_decompress_pages($module, objs, threads, /)\n"
"--\n"
"\n"
"Returns bytes.\n"
"\n"
"Decompress one page per object of `objs` (a list or tuple of bytes-like\n"
"objects) into one bytes of len(objs)*4096 bytes; page k is\n"
"result[k*4096 : (k+1)*4096]:\n"
"  - objs[k] of length 0: 4096 zero bytes;\n"
"  - objs[k] of length 4096: copied as is (a page stored raw);\n"
"  - else LZ4_decompress_safe(objs[k], page, len, 4096) must return exactly\n"
"    4096, otherwise ValueError('lz4: page k: corrupt block (...)') naming the\n"
"    lowest such k, and no result.\n"
"A non-buffer in objs raises TypeError.  All buffers are acquired\n"
"(PyBUF_SIMPLE) before the work and released on every path.\n"
"\n"
"Threads and the GIL: the loop runs with the GIL released; `threads` >= 1\n"
"(ValueError otherwise) splits the objects into min(threads, len(objs), 8)\n"
"contiguous chunks, chunk 0 on the calling thread and the others on helper\n"
"threads as lz4_compress_pages, so both CPUs can work on one request.");

static PyObject *
decompress_pages(const char *fname, PyObject *const *args, Py_ssize_t nargs, int kind)
{
    int threads;
    PyObject *seq, *out = NULL;
    Py_buffer *bufs = NULL;
    Obj *objs = NULL;
    Py_ssize_t n, acquired = 0;

    if (!nargs_ok(fname, nargs, 2))
        return NULL;
    if (int_arg(args[1], "threads", &threads) < 0)
        return NULL;
    if (threads < 1) {
        PyErr_Format(PyExc_ValueError, "%s: threads must be >= 1, not %d", fname, threads);
        return NULL;
    }
    seq = PySequence_Fast(args[0], kind == KIND_ZSTD
                                       ? "zstd_decompress_pages: objs must be a list or tuple"
                                       : "lz4_decompress_pages: objs must be a list or tuple");
    if (seq == NULL)
        return NULL;
    n = PySequence_Fast_GET_SIZE(seq);
    if (n > PY_SSIZE_T_MAX / PAGE) {
        PyErr_NoMemory();
        goto done;
    }
    bufs = PyMem_Malloc(sizeof(Py_buffer) * (size_t)(n > 0 ? n : 1));
    if (bufs == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (; acquired < n; acquired++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, acquired);
        if (PyObject_GetBuffer(item, &bufs[acquired], PyBUF_SIMPLE) < 0) {
            if (PyErr_ExceptionMatches(PyExc_TypeError)) {
                PyErr_Format(PyExc_TypeError,
                             "%s: objs[%zd]: a bytes-like object is required, not '%.200s'",
                             fname, acquired, Py_TYPE(item)->tp_name);
            }
            goto done;
        }
    }
    objs = PyMem_Malloc(sizeof(Obj) * (size_t)(n > 0 ? n : 1));
    if (objs == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        objs[k].p = bufs[k].buf;
        objs[k].len = bufs[k].len;
    }
    out = decode_into_bytes(objs, n, threads, kind);

done:
    if (bufs != NULL)
        release_buffers(bufs, acquired);
    PyMem_Free(bufs);
    PyMem_Free(objs);
    Py_DECREF(seq);
    return out;
}

static PyObject *
lz4_decompress_pages(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs)
{
    return decompress_pages("lz4_decompress_pages", args, nargs, KIND_LZ4);
}

#ifdef ZRAMFS_ZSTD
PyDoc_STRVAR(zstd_decompress_pages_doc,
"zstd_decompress_pages($module, objs, threads, /)\n"
"--\n"
"\n"
"Returns bytes.\n"
"\n"
"lz4_decompress_pages for zstd frames: the same result, the same length-0\n"
"(zeros) and length-4096 (raw) objects, the same errors, GIL release and\n"
"`threads` splitting.  Any other object must be exactly one zstd frame that\n"
"claims 4096 bytes of content and decodes to them, else ValueError('zstd:\n"
"page k: corrupt frame (...)') naming the lowest such k.  Each thread keeps\n"
"its own context.");

static PyObject *
zstd_decompress_pages(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs)
{
    return decompress_pages("zstd_decompress_pages", args, nargs, KIND_ZSTD);
}
#endif

/* The pool views a gather uses: views[seg] is acquired (PyBUF_SIMPLE) into
 * vb[seg] on first use, have[seg] marking it; views_release undoes all. */
static int
view_acquire(PyObject *views, Py_ssize_t seg, Py_buffer *vb, char *have)
{
    if (have[seg])
        return 0;
    if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(views, seg), &vb[seg], PyBUF_SIMPLE) < 0)
        return -1;
    have[seg] = 1;
    return 0;
}

static void
views_release(Py_buffer *vb, char *have, Py_ssize_t nv)
{
    if (vb == NULL || have == NULL)
        return;
    for (Py_ssize_t i = 0; i < nv; i++) {
        if (have[i])
            PyBuffer_Release(&vb[i]);
    }
}

PyDoc_STRVAR(lz4_decompress_gather_doc,
"lz4_decompress_gather($module, views, segs, offs, sizes, fills, threads, /)\n"
"--\n"
"\n"
"Returns bytes.\n"
"\n"
"lz4_decompress_pages of objects given by place instead of as objects:\n"
"page k is decoded from views[segs[k]][offs[k] : offs[k] + sizes[k]] by the\n"
"same rules (size 0: zeros, 4096: copied raw, else an LZ4 block that must\n"
"decode to exactly 4096 bytes, ValueError naming the lowest bad page).\n"
"segs/offs of a size-0 page are not looked at.  Then every (k, word) of\n"
"`fills` makes page k the 8-byte little-endian `word` repeated (a\n"
"same-filled page; its size must be 0).  `views` is a list or tuple of\n"
"bytes-like objects (a pool's segments), segs/offs/sizes lists or tuples of\n"
"ints of one length; a place outside its view, a size outside 0..4096 or a\n"
"fill index outside the pages is a ValueError, raised before any work.\n"
"\n"
"Why: building one memoryview slice per page in Python cost as much as a\n"
"third of the decoding itself for a 512 KiB read.  Only the views a page\n"
"uses are acquired (PyBUF_SIMPLE), all released on every path.  Same GIL\n"
"and `threads` behaviour as lz4_decompress_pages.");

static int
ssize_item(PyObject *seq, Py_ssize_t k, const char *what, Py_ssize_t *out)
{
    PyObject *item = PySequence_Fast_GET_ITEM(seq, k);
    Py_ssize_t v = PyLong_AsSsize_t(item);
    if (v == -1 && PyErr_Occurred()) {
        if (PyErr_ExceptionMatches(PyExc_TypeError))
            PyErr_Format(PyExc_TypeError, "lz4_decompress_gather: %s[%zd] must be an int", what, k);
        return -1;
    }
    *out = v;
    return 0;
}

static PyObject *
lz4_decompress_gather(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs)
{
    const char *fn = "lz4_decompress_gather";
    int threads;
    PyObject *views = NULL, *segs = NULL, *offs = NULL, *sizes = NULL, *fills = NULL;
    PyObject *out = NULL;
    Py_buffer *vb = NULL;
    char *have = NULL;
    Obj *objs = NULL;
    unsigned long long *words = NULL;
    Py_ssize_t *fill_at = NULL;
    Py_ssize_t n = 0, nv = 0, nf = 0;

    if (!nargs_ok(fn, nargs, 6))
        return NULL;
    if (int_arg(args[5], "threads", &threads) < 0)
        return NULL;
    if (threads < 1) {
        PyErr_Format(PyExc_ValueError, "%s: threads must be >= 1, not %d", fn, threads);
        return NULL;
    }
    views = PySequence_Fast(args[0], "lz4_decompress_gather: views must be a list or tuple");
    segs = views ? PySequence_Fast(args[1], "lz4_decompress_gather: segs must be a list or tuple") : NULL;
    offs = segs ? PySequence_Fast(args[2], "lz4_decompress_gather: offs must be a list or tuple") : NULL;
    sizes = offs ? PySequence_Fast(args[3], "lz4_decompress_gather: sizes must be a list or tuple") : NULL;
    fills = sizes ? PySequence_Fast(args[4], "lz4_decompress_gather: fills must be a list or tuple") : NULL;
    if (fills == NULL)
        goto done;
    n = PySequence_Fast_GET_SIZE(sizes);
    nv = PySequence_Fast_GET_SIZE(views);
    nf = PySequence_Fast_GET_SIZE(fills);
    if (PySequence_Fast_GET_SIZE(segs) != n || PySequence_Fast_GET_SIZE(offs) != n) {
        PyErr_Format(PyExc_ValueError, "%s: segs, offs and sizes must have one length", fn);
        goto done;
    }
    if (n > PY_SSIZE_T_MAX / PAGE) {
        PyErr_NoMemory();
        goto done;
    }
    vb = PyMem_Malloc(sizeof(Py_buffer) * (size_t)(nv > 0 ? nv : 1));
    have = PyMem_Calloc((size_t)(nv > 0 ? nv : 1), 1);
    objs = PyMem_Malloc(sizeof(Obj) * (size_t)(n > 0 ? n : 1));
    words = PyMem_Malloc(sizeof(unsigned long long) * (size_t)(nf > 0 ? nf : 1));
    fill_at = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(nf > 0 ? nf : 1));
    if (vb == NULL || have == NULL || objs == NULL || words == NULL || fill_at == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        Py_ssize_t size, seg, off;
        if (ssize_item(sizes, k, "sizes", &size) < 0)
            goto done;
        if (size < 0 || size > PAGE) {
            PyErr_Format(PyExc_ValueError, "%s: sizes[%zd] = %zd is not in 0..4096", fn, k, size);
            goto done;
        }
        objs[k].p = NULL;
        objs[k].len = size;
        if (size == 0)
            continue;
        if (ssize_item(segs, k, "segs", &seg) < 0 || ssize_item(offs, k, "offs", &off) < 0)
            goto done;
        if (seg < 0 || seg >= nv) {
            PyErr_Format(PyExc_ValueError, "%s: segs[%zd] = %zd: no such view", fn, k, seg);
            goto done;
        }
        if (view_acquire(views, seg, vb, have) < 0)
            goto done;
        if (off < 0 || off > vb[seg].len - size) {
            PyErr_Format(PyExc_ValueError, "%s: page %zd: [%zd, %zd) is outside view %zd (%zd bytes)",
                         fn, k, off, off + size, seg, vb[seg].len);
            goto done;
        }
        objs[k].p = (const char *)vb[seg].buf + off;
    }
    for (Py_ssize_t i = 0; i < nf; i++) {
        PyObject *pair = PySequence_Fast_GET_ITEM(fills, i);
        Py_ssize_t at;
        unsigned long long w;
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
            PyErr_Format(PyExc_TypeError, "%s: fills[%zd] must be an (index, word) tuple", fn, i);
            goto done;
        }
        at = PyLong_AsSsize_t(PyTuple_GET_ITEM(pair, 0));
        if (at == -1 && PyErr_Occurred())
            goto done;
        w = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(pair, 1));
        if (w == (unsigned long long)-1 && PyErr_Occurred())
            goto done;
        if (at < 0 || at >= n || objs[at].len != 0) {
            PyErr_Format(PyExc_ValueError, "%s: fills[%zd]: page %zd is not an empty page", fn, i, at);
            goto done;
        }
        fill_at[i] = at;
        words[i] = w;
    }
    out = decode_into_bytes(objs, n, threads, KIND_LZ4);
    if (out != NULL) {
        char *o = PyBytes_AS_STRING(out);
        for (Py_ssize_t i = 0; i < nf; i++) {
            unsigned char w8[8];
            for (int b = 0; b < 8; b++)
                w8[b] = (unsigned char)(words[i] >> (8 * b));
            char *page = o + fill_at[i] * PAGE;
            for (int q = 0; q < PAGE; q += 8)
                memcpy(page + q, w8, 8);
        }
    }

done:
    views_release(vb, have, nv);
    PyMem_Free(vb);
    PyMem_Free(have);
    PyMem_Free(objs);
    PyMem_Free(words);
    PyMem_Free(fill_at);
    Py_XDECREF(views);
    Py_XDECREF(segs);
    Py_XDECREF(offs);
    Py_XDECREF(sizes);
    Py_XDECREF(fills);
    return out;
}

/* ---------------------------------------------------------- slot reading */

PyDoc_STRVAR(lz4_read_slots_doc,
"lz4_read_slots($module, views, attr, handle, first, stop, layout, now, threads, /)\n"
"--\n"
"\n"
"Returns bytes, or None.\n"
"\n"
"A device's multi-page read in one call: lz4_decompress_gather with the\n"
"slot words read here instead of decoded into lists in Python.  `attr` and\n"
"`handle` are buffers of native uint64 words (the slot table; `attr`\n"
"writable), slots first..stop-1 are read.  `layout` is the tuple\n"
"(slow, size_mask, same, keep, seg_shift, off_mask) of the device's word\n"
"layout:\n"
"  - any slot with a `slow` bit: None at once, nothing read or changed (the\n"
"    caller takes its general path);\n"
"  - a slot with the `same` bit: the page is its handle word repeated (a\n"
"    same-filled page);\n"
"  - else size = attr & size_mask: 0 a zero page, 4096 a page stored raw,\n"
"    else an LZ4 block that must decode to exactly 4096 bytes (ValueError\n"
"    naming the lowest bad page, as lz4_decompress_gather), found in\n"
"    views[handle >> seg_shift] at offset (handle >> 1) & off_mask;\n"
"  - afterwards, and only on success, every slot that holds a page (size\n"
"    or `same` set) gets attr = (attr & keep) | now: mark_slot_accessed().\n"
"A size above 4096, a place outside its view, a view index out of range or\n"
"a slot range outside the buffers is a ValueError, raised before any work.\n"
"\n"
"Why: decoding 128 slot words into five Python lists and stamping them back\n"
"cost ~80 us of a ~400 us 512 KiB read.  Same GIL and `threads` behaviour as\n"
"lz4_decompress_pages; the slot table must not change meanwhile (the\n"
"caller's thread owns it and is blocked in this call).");

static int
u64_item(PyObject *tuple, Py_ssize_t i, unsigned long long *out)
{
    unsigned long long v = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(tuple, i));
    if (v == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    *out = v;
    return 0;
}

static PyObject *
read_slots(const char *fn, PyObject *const *args, Py_ssize_t nargs, int kind)
{
    int threads;
    Py_ssize_t first, stop, n = 0, nv = 0, nf = 0;
    unsigned long long slow, size_mask, same, keep, seg_shift, off_mask, now;
    PyObject *views = NULL, *out = NULL, *layout;
    Py_buffer ab = {0}, hb = {0};
    int have_a = 0, have_h = 0;
    Py_buffer *vb = NULL;
    char *have = NULL;
    Obj *objs = NULL;
    Py_ssize_t *fill_at = NULL;

    if (!nargs_ok(fn, nargs, 8))
        return NULL;
    if (ssize_arg(args[3], &first) < 0 || ssize_arg(args[4], &stop) < 0)
        return NULL;
    layout = args[5];
    if (!PyTuple_Check(layout) || PyTuple_GET_SIZE(layout) != 6) {
        PyErr_Format(PyExc_TypeError, "%s: layout must be a tuple of 6 ints", fn);
        return NULL;
    }
    if (u64_item(layout, 0, &slow) < 0 || u64_item(layout, 1, &size_mask) < 0
        || u64_item(layout, 2, &same) < 0 || u64_item(layout, 3, &keep) < 0
        || u64_item(layout, 4, &seg_shift) < 0 || u64_item(layout, 5, &off_mask) < 0)
        return NULL;
    if (seg_shift > 63) {
        PyErr_Format(PyExc_ValueError, "%s: seg_shift %llu is not in 0..63", fn, seg_shift);
        return NULL;
    }
    now = PyLong_AsUnsignedLongLong(args[6]);
    if (now == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    if (int_arg(args[7], "threads", &threads) < 0)
        return NULL;
    if (threads < 1) {
        PyErr_Format(PyExc_ValueError, "%s: threads must be >= 1, not %d", fn, threads);
        return NULL;
    }
    if (PyObject_GetBuffer(args[1], &ab, PyBUF_WRITABLE) < 0)
        goto done;
    have_a = 1;
    if (PyObject_GetBuffer(args[2], &hb, PyBUF_SIMPLE) < 0)
        goto done;
    have_h = 1;
    if (ab.len % 8 || hb.len % 8) {
        PyErr_Format(PyExc_ValueError, "%s: attr and handle must be whole uint64 words", fn);
        goto done;
    }
    if (first < 0 || stop < first || stop > ab.len / 8 || stop > hb.len / 8) {
        PyErr_Format(PyExc_ValueError, "%s: slots [%zd, %zd) are outside the table", fn, first,
                     stop);
        goto done;
    }
    n = stop - first;
    if (n > PY_SSIZE_T_MAX / PAGE) {
        PyErr_NoMemory();
        goto done;
    }
    {
        /* Word loads through memcpy: the buffers need not be aligned. */
        const char *ap = (const char *)ab.buf + first * 8;
        const char *hp = (const char *)hb.buf + first * 8;
        for (Py_ssize_t k = 0; k < n; k++) {
            uint64_t a;
            memcpy(&a, ap + k * 8, 8);
            if (a & slow) {
                out = Py_NewRef(Py_None);
                goto done;
            }
        }
        views = PySequence_Fast(args[0], kind == KIND_ZSTD
                                           ? "zstd_read_slots: views must be a list or tuple"
                                           : "lz4_read_slots: views must be a list or tuple");
        if (views == NULL)
            goto done;
        nv = PySequence_Fast_GET_SIZE(views);
        vb = PyMem_Malloc(sizeof(Py_buffer) * (size_t)(nv > 0 ? nv : 1));
        have = PyMem_Calloc((size_t)(nv > 0 ? nv : 1), 1);
        objs = PyMem_Malloc(sizeof(Obj) * (size_t)(n > 0 ? n : 1));
        fill_at = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(n > 0 ? n : 1));
        if (vb == NULL || have == NULL || objs == NULL || fill_at == NULL) {
            PyErr_NoMemory();
            goto done;
        }
        for (Py_ssize_t k = 0; k < n; k++) {
            uint64_t a, h;
            memcpy(&a, ap + k * 8, 8);
            memcpy(&h, hp + k * 8, 8);
            objs[k].p = NULL;
            objs[k].len = 0;
            if (a & same) {
                fill_at[nf++] = k;
                continue;
            }
            uint64_t size = a & size_mask;
            if (size == 0)
                continue;
            if (size > PAGE) {
                PyErr_Format(PyExc_ValueError, "%s: slot %zd: size %llu is not in 0..4096", fn,
                             first + k, (unsigned long long)size);
                goto done;
            }
            uint64_t seg = h >> seg_shift, off = (h >> 1) & off_mask;
            if (seg >= (uint64_t)nv) {
                PyErr_Format(PyExc_ValueError, "%s: slot %zd: view %llu: no such view", fn,
                             first + k, (unsigned long long)seg);
                goto done;
            }
            if (view_acquire(views, (Py_ssize_t)seg, vb, have) < 0)
                goto done;
            if (off > (uint64_t)vb[seg].len || (uint64_t)vb[seg].len - off < size) {
                PyErr_Format(PyExc_ValueError,
                             "%s: slot %zd: [%llu, %llu) is outside view %llu (%zd bytes)", fn,
                             first + k, (unsigned long long)off,
                             (unsigned long long)(off + size), (unsigned long long)seg,
                             vb[seg].len);
                goto done;
            }
            objs[k].p = (const char *)vb[seg].buf + off;
            objs[k].len = (Py_ssize_t)size;
        }
        out = decode_into_bytes(objs, n, threads, kind);
        if (out == NULL)
            goto done;
        char *o = PyBytes_AS_STRING(out);
        for (Py_ssize_t i = 0; i < nf; i++) {
            char *page = o + fill_at[i] * PAGE;
            uint64_t w;
            memcpy(&w, hp + fill_at[i] * 8, 8);
            for (int b = 0; b < 8; b++) /* the word's little-endian bytes */
                page[b] = (char)(unsigned char)(w >> (8 * b));
            for (int q = 8; q < PAGE; q += 8)
                memcpy(page + q, page, 8);
        }
        char *aw = (char *)ab.buf + first * 8;
        for (Py_ssize_t k = 0; k < n; k++) {
            uint64_t a;
            memcpy(&a, aw + k * 8, 8);
            if (a & (size_mask | same)) {
                a = (a & keep) | now;
                memcpy(aw + k * 8, &a, 8);
            }
        }
    }

done:
    views_release(vb, have, nv);
    PyMem_Free(vb);
    PyMem_Free(have);
    PyMem_Free(objs);
    PyMem_Free(fill_at);
    Py_XDECREF(views);
    if (have_h)
        PyBuffer_Release(&hb);
    if (have_a)
        PyBuffer_Release(&ab);
    return out;
}

static PyObject *
lz4_read_slots(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs)
{
    return read_slots("lz4_read_slots", args, nargs, KIND_LZ4);
}

#ifdef ZRAMFS_ZSTD
PyDoc_STRVAR(zstd_read_slots_doc,
"zstd_read_slots($module, views, attr, handle, first, stop, layout, now, threads, /)\n"
"--\n"
"\n"
"Returns bytes, or None.\n"
"\n"
"lz4_read_slots for a device whose objects are zstd frames, decoded as\n"
"zstd_decompress_pages does (exactly one frame of 4096 bytes; ValueError\n"
"naming the lowest bad page); the same GIL release and `threads`.");

static PyObject *
zstd_read_slots(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs)
{
    return read_slots("zstd_read_slots", args, nargs, KIND_ZSTD);
}
#endif

/* -------------------------------------------------------------- single page */

PyDoc_STRVAR(lz4_decompress_page_doc,
"lz4_decompress_page($module, obj, /)\n"
"--\n"
"\n"
"Returns bytes.\n"
"\n"
"One LZ4 block back to exactly 4096 bytes: LZ4_decompress_safe(obj, out,\n"
"len(obj), 4096) must return 4096, else ValueError('lz4: page 0: corrupt\n"
"block (...)').  Only for compressed blocks: unlike lz4_decompress_pages, a\n"
"4096-byte (raw) or empty input is not special and must decode to 4096 too.\n"
"\n"
"Keeps the GIL: a page decodes in a few microseconds, less than releasing and\n"
"reacquiring the GIL costs, and this call replaces a Python wrapper frame\n"
"on the single-page path.");

static PyObject *
lz4_decompress_page(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer src;
    PyObject *out;
    int r = -1;

    if (!nargs_ok("lz4_decompress_page", nargs, 1))
        return NULL;
    if (PyObject_GetBuffer(args[0], &src, PyBUF_SIMPLE) < 0)
        return NULL;
    out = PyBytes_FromStringAndSize(NULL, PAGE);
    if (out != NULL) {
        if (src.len <= INT_MAX)
            r = LZ4_decompress_safe(src.buf, PyBytes_AS_STRING(out), (int)src.len, PAGE);
        if (r != PAGE) {
            corrupt_error(KIND_LZ4, 0, src.len, r);
            Py_CLEAR(out);
        }
    }
    PyBuffer_Release(&src);
    return out;
}

PyDoc_STRVAR(lz4_compress_page_doc,
"lz4_compress_page($module, page, acceleration=1, /)\n"
"--\n"
"\n"
"Returns bytes.\n"
"\n"
"One LZ4 fast-mode block of `page`, returned at its real length.  Up to\n"
"65535 bytes (every page) it is the block the kernel's LZ4_compress_fast\n"
"makes (kz_compress, as lz4_compress_pages); a longer input (up to\n"
"LZ4_MAX_INPUT_SIZE) is compressed by liblz4 on a fresh stream, as\n"
"python-lz4's lz4.block.compress(page, store_size=False) does.  No\n"
"same-filled or store-raw handling.  `acceleration` must fit in a C int;\n"
"left out, it is 1 (LZ4_ACCELERATION_DEFAULT), so the function itself can\n"
"be a codec's compress callable, with no partial or wrapper in between.\n"
"\n"
"Keeps the GIL: a 4 KiB page compresses in a few microseconds, less than\n"
"releasing and reacquiring the GIL costs, and this call replaces a Python\n"
"wrapper frame on the single-page path.  (Other threads wait meanwhile, so\n"
"large inputs belong in lz4_compress_pages.)");

static PyObject *
lz4_compress_page(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer src;
    int acceleration = 1;
    PyObject *out = NULL;
    LZ4_stream_t state;

    if (nargs != 1 && !nargs_ok("lz4_compress_page", nargs, 2))
        return NULL;
    if (nargs == 2 && int_arg(args[1], "acceleration", &acceleration) < 0)
        return NULL;
    if (PyObject_GetBuffer(args[0], &src, PyBUF_SIMPLE) < 0)
        return NULL;
    if (src.len > LZ4_MAX_INPUT_SIZE) {
        PyErr_Format(PyExc_OverflowError, "lz4_compress_page: input too large for LZ4 (%zd bytes)",
                     src.len);
        goto done;
    }
    if (src.len <= KZ_MAX_INPUT) { /* every page: the kernel's block */
        out = PyBytes_FromStringAndSize(NULL, KZ_BOUND(src.len));
        if (out == NULL)
            goto done;
        size_t n = kz_compress(src.buf, (size_t)src.len, (uint8_t *)PyBytes_AS_STRING(out),
                               acceleration, (uint16_t *)&state);
        if (n != (size_t)KZ_BOUND(src.len))
            _PyBytes_Resize(&out, (Py_ssize_t)n); /* out = NULL (error set) on failure */
        goto done;
    }
    int bound = LZ4_compressBound((int)src.len);
    out = PyBytes_FromStringAndSize(NULL, bound);
    if (out == NULL)
        goto done;
    LZ4_stream_t *s = LZ4_initStream(&state, sizeof(state));
    int r = LZ4_compress_fast_continue(s, src.buf, PyBytes_AS_STRING(out), (int)src.len, bound,
                                       acceleration);
    if (r <= 0) {
        PyErr_SetString(PyExc_ValueError, "lz4_compress_page: LZ4 compression failed");
        Py_CLEAR(out);
        goto done;
    }
    if (r != bound)
        _PyBytes_Resize(&out, r); /* sets out to NULL (and an error) on failure */

done:
    PyBuffer_Release(&src);
    return out;
}

/* ---------------------------------------------------------- zsmalloc fill */

PyDoc_STRVAR(zs_fill_doc,
"zs_fill($module, cls, zspages, ks, i, blobs, sizes, owners, handles, /)\n"
"--\n"
"\n"
"Returns int.\n"
"\n"
"zramfs.core.zsmalloc's store_many inner loop for one non-huge class, on the\n"
"pool's own Python state (`cls` is its _Class; the C code reads and writes\n"
"its lists, dicts and counters exactly as ZsPool._fill does).  Stores the\n"
"objects ks[i:] in order: blobs[k] (sizes[k] bytes) for owners[k], its\n"
"handle put in handles[k]; returns the index in ks after the last one\n"
"stored.  Zspages come from `zspages` (a list of fresh slots, in order) or,\n"
"when it is None, from the class's fullness groups, fullest first\n"
"(_isolate), until the objects or the zspages run out.  Each zspage is\n"
"filled until full, then put at the tail of the group its new fullness\n"
"says (a fresh zspage left empty by a failed first copy is not: the caller\n"
"frees it).  ks, blobs, sizes, owners and handles must be lists.  A blob\n"
"whose length is not its size, or that does not fit, is a ValueError\n"
"raised after the objects before it are stored and accounted, as _fill\n"
"leaves them.\n"
"\n"
"Why: a 512 KiB write spreads over ~50 size classes, ~2.5 objects each, and\n"
"the Python version's per-zspage bookkeeping cost ~10 us a call on this\n"
"machine, more than the copies.  Keeps the GIL (short, and it touches\n"
"Python objects).");

static PyObject *s_image, *s_id, *s_dev_lock, *s_words, *s_stats, *s_acquired, *s_disksize,
    *s_table, *s_pool, *s_comps, *s_clock, *s_views, *s_bstat, *s_attr, *s_handle,
    *s_in_flight, *s_busy_since, *s_io_ticks, *s_time_in_queue, *s_read_ticks, *s_read_ios,
    *s_read_sectors, *s_decompress_slots;
static PyObject *s_huge, *s_whdr, *s_zwords, *s_ppz, *s_howner, *s_seg_info, *s_alloc_zspage,
    *s_free_zspage, *s_by_size, *s_limit_pages, *s_huge_class_size, *s_pages, *s_peak_pages,
    *s_actime, *s_compress, *s_pages_stored, *s_compr_data_size, *s_huge_pages,
    *s_huge_pages_since, *s_max_used_pages, *s_write_ticks, *s_write_ios, *s_write_sectors, *s_bad_malloc;
static PyObject *s_smask, *s_alloc_zspages, *s_classes, *s_ord_table;
static PyObject *s_free_slots, *s_segs, *s_seg_live, *s_spare, *s_nzspages, *s_allocated,
    *s_zbytes, *s_grow, *s_map_segment;
static PyObject *s_inuse, *s_freeobj, *s_shift, *s_bvs, *s_hbase, *s_hdr, *s_wsize, *s_objs,
    *s_fg, *s_groups, *s_mask, *s_used, *s_popitem;

static int
intern_names(void)
{
    struct { PyObject **slot; const char *name; } names[] = {
        {&s_inuse, "inuse"}, {&s_freeobj, "freeobj"}, {&s_shift, "shift"}, {&s_bvs, "bvs"},
        {&s_hbase, "hbase"}, {&s_hdr, "hdr"}, {&s_wsize, "wsize"}, {&s_objs, "objs"},
        {&s_fg, "fg"}, {&s_groups, "groups"}, {&s_mask, "mask"}, {&s_used, "used"},
        {&s_popitem, "popitem"},
        /* read_nowait */
        {&s_image, "image"}, {&s_id, "id"}, {&s_dev_lock, "dev_lock"}, {&s_words, "words"},
        {&s_stats, "stats"}, {&s_acquired, "acquired"}, {&s_disksize, "disksize"},
        {&s_table, "table"}, {&s_pool, "pool"}, {&s_comps, "comps"}, {&s_clock, "clock"},
        {&s_views, "_views"}, {&s_bstat, "bstat"}, {&s_attr, "attr"}, {&s_handle, "handle"},
        {&s_in_flight, "in_flight"}, {&s_busy_since, "_busy_since_ns"},
        {&s_io_ticks, "io_ticks"}, {&s_time_in_queue, "time_in_queue"},
        {&s_read_ticks, "read_ticks"}, {&s_read_ios, "read_ios"},
        {&s_read_sectors, "read_sectors"}, {&s_decompress_slots, "decompress_slots"},
        /* zs_store / zs_free / write_nowait */
        {&s_huge, "huge"}, {&s_whdr, "whdr"}, {&s_zwords, "zwords"}, {&s_ppz, "ppz"},
        {&s_howner, "howner"}, {&s_seg_info, "_seg_info"}, {&s_alloc_zspage, "_alloc_zspage"},
        {&s_free_zspage, "_free_zspage"}, {&s_by_size, "_by_size"},
        {&s_limit_pages, "limit_pages"}, {&s_huge_class_size, "huge_class_size"},
        {&s_pages, "_pages"}, {&s_peak_pages, "peak_pages"}, {&s_actime, "_actime"},
        {&s_compress, "compress"}, {&s_pages_stored, "pages_stored"},
        {&s_compr_data_size, "compr_data_size"}, {&s_huge_pages, "huge_pages"},
        {&s_huge_pages_since, "huge_pages_since"}, {&s_max_used_pages, "max_used_pages"},
        {&s_write_ticks, "write_ticks"}, {&s_write_ios, "write_ios"},
        {&s_write_sectors, "write_sectors"}, {&s_bad_malloc, "_bad_malloc"},
        /* zs_store_batch */
        {&s_smask, "smask"}, {&s_alloc_zspages, "_alloc_zspages"}, {&s_classes, "_classes"},
        {&s_ord_table, "_ord_table"},
        /* zs_alloc_zspages */
        {&s_free_slots, "free_slots"}, {&s_segs, "segs"}, {&s_seg_live, "seg_live"},
        {&s_spare, "spare"}, {&s_nzspages, "nzspages"}, {&s_allocated, "allocated"},
        {&s_zbytes, "zbytes"}, {&s_grow, "_grow"}, {&s_map_segment, "_map_segment"},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (*names[i].slot == NULL) {
            *names[i].slot = PyUnicode_InternFromString(names[i].name);
            if (*names[i].slot == NULL)
                return -1;
        }
    }
    return 0;
}

/* An int attribute of `o` as Py_ssize_t. */
static int
attr_ssize(PyObject *o, PyObject *name, Py_ssize_t *out)
{
    PyObject *v = PyObject_GetAttr(o, name);
    if (v == NULL)
        return -1;
    Py_ssize_t x = PyLong_AsSsize_t(v);
    Py_DECREF(v);
    if (x == -1 && PyErr_Occurred())
        return -1;
    *out = x;
    return 0;
}

/* A list attribute of `o` (new reference), TypeError if not a list. */
static PyObject *
attr_list(PyObject *o, PyObject *name)
{
    PyObject *v = PyObject_GetAttr(o, name);
    if (v != NULL && !PyList_Check(v)) {
        PyErr_Format(PyExc_TypeError, "zsmalloc: %U must be a list", name);
        Py_CLEAR(v);
    }
    return v;
}

static int
list_ssize(PyObject *list, Py_ssize_t k, Py_ssize_t *out)
{
    if (k < 0 || k >= PyList_GET_SIZE(list)) {
        PyErr_Format(PyExc_IndexError, "zs_fill: index %zd out of range", k);
        return -1;
    }
    Py_ssize_t v = PyLong_AsSsize_t(PyList_GET_ITEM(list, k));
    if (v == -1 && PyErr_Occurred())
        return -1;
    *out = v;
    return 0;
}

static int
list_set_ssize(PyObject *list, Py_ssize_t k, Py_ssize_t v)
{
    PyObject *o = PyLong_FromSsize_t(v);
    if (o == NULL)
        return -1;
    return PyList_SetItem(list, k, o); /* steals o; k was checked by list_ssize */
}

/*
 * Where fill_class's objects come from and where their handles go: object t
 * of the run (0-based from the caller's start) as a pointer to its bytes
 * (`hold` keeps a buffer alive until fill_class releases it, if `*held`),
 * its size and its owner; put() receives its handle.  -1 with an exception.
 */
typedef struct FillSrc FillSrc;
struct FillSrc {
    int (*get)(FillSrc *s, Py_ssize_t t, Py_buffer *hold, int *held, const char **p,
               Py_ssize_t *size, unsigned long long *owner);
    int (*put)(FillSrc *s, Py_ssize_t t, unsigned long long handle);
};

/*
 * ZsPool._fill's loop over zspages for one non-huge class `cls`: objects
 * i..m-1 of `src` into fresh `zspages` (a list of slots, in order) or, when
 * it is NULL, into the class's partial zspages fullest first; returns the
 * next index, or -1 with an exception after the objects before the failing
 * one are stored and accounted (as _fill leaves them).
 */
static Py_ssize_t
fill_class(const char *fn, PyObject *cls, PyObject *zspages, FillSrc *src, Py_ssize_t i,
           Py_ssize_t m)
{
    PyObject *inuse = NULL, *freeobj = NULL, *bvs = NULL, *hbase = NULL, *fg = NULL,
             *groups = NULL;
    Py_ssize_t shift, hdr, wsize, objs, maskv, used, zi = 0, cur_si = -1, result = -1;
    Py_ssize_t added = 0;
    Py_buffer bv = {0};
    int have_bv = 0, failed = 0;
    unsigned long long mask;

    if (intern_names() < 0)
        return -1;
    if (attr_ssize(cls, s_shift, &shift) < 0 || attr_ssize(cls, s_hdr, &hdr) < 0
        || attr_ssize(cls, s_wsize, &wsize) < 0 || attr_ssize(cls, s_objs, &objs) < 0
        || attr_ssize(cls, s_mask, &maskv) < 0 || attr_ssize(cls, s_used, &used) < 0)
        return -1;
    if (shift < 0 || shift > 62 || maskv < 0 || maskv >= (1 << 12) || wsize <= 0 || objs <= 0) {
        PyErr_Format(PyExc_ValueError, "%s: class state out of range", fn);
        return -1;
    }
    mask = (unsigned long long)maskv;
    inuse = attr_list(cls, s_inuse);
    freeobj = inuse ? attr_list(cls, s_freeobj) : NULL;
    bvs = freeobj ? attr_list(cls, s_bvs) : NULL;
    hbase = bvs ? attr_list(cls, s_hbase) : NULL;
    fg = hbase ? attr_list(cls, s_fg) : NULL;
    groups = fg ? attr_list(cls, s_groups) : NULL;
    if (groups == NULL)
        goto done;

    while (i < m) {
        Py_ssize_t z, n, w, si, take, done_here = 0, g;
        unsigned long long hb;
        if (zspages == NULL) {
            /* _isolate(c, sparsest=False): the fullest group's first entry. */
            if (!mask)
                break;
            g = 63 - __builtin_clzll(mask);
            if (g >= PyList_GET_SIZE(groups)) {
                PyErr_Format(PyExc_ValueError, "%s: group %zd missing", fn, g);
                goto done;
            }
            PyObject *d = PyList_GET_ITEM(groups, g);
            PyObject *item = PyObject_CallMethodNoArgs(d, s_popitem);
            if (item == NULL)
                goto done;
            z = PyLong_AsSsize_t(PyTuple_Check(item) && PyTuple_GET_SIZE(item) == 2
                                     ? PyTuple_GET_ITEM(item, 0) : item);
            Py_DECREF(item);
            if (z == -1 && PyErr_Occurred())
                goto done;
            Py_ssize_t left = PyObject_Length(d);
            if (left < 0)
                goto done;
            if (!left)
                mask ^= 1ULL << g;
        }
        else {
            if (zi >= PyList_GET_SIZE(zspages))
                break;
            z = PyLong_AsSsize_t(PyList_GET_ITEM(zspages, zi));
            zi++;
            if (z == -1 && PyErr_Occurred())
                goto done;
        }
        if (list_ssize(inuse, z, &n) < 0 || list_ssize(freeobj, z, &w) < 0)
            goto done;
        si = z >> shift;
        if (si != cur_si) {
            if (have_bv) {
                PyBuffer_Release(&bv);
                have_bv = 0;
            }
            if (si < 0 || si >= PyList_GET_SIZE(bvs) || si >= PyList_GET_SIZE(hbase)) {
                PyErr_Format(PyExc_IndexError, "%s: segment %zd out of range", fn, si);
                goto done;
            }
            if (PyObject_GetBuffer(PyList_GET_ITEM(bvs, si), &bv, PyBUF_WRITABLE) < 0)
                goto done;
            have_bv = 1;
            cur_si = si;
        }
        hb = PyLong_AsUnsignedLongLong(PyList_GET_ITEM(hbase, si));
        if (hb == (unsigned long long)-1 && PyErr_Occurred())
            goto done;
        take = objs - n;
        if (take > m - i)
            take = m - i;
        char *base = bv.buf;
        for (Py_ssize_t t = 0; t < take; t++) {
            Py_ssize_t size;
            unsigned long long owner;
            const char *p;
            Py_buffer b;
            int held = 0;
            if (src->get(src, i + t, &b, &held, &p, &size, &owner) < 0) {
                failed = 1;
                break;
            }
            Py_ssize_t hoff = w * 8, o = hoff + hdr;
            if (w < 0 || size < 0 || hoff > bv.len - 8 || o > bv.len - size) {
                PyErr_Format(PyExc_ValueError, "%s: object %zd (%zd bytes) does not fit", fn,
                             i + t, size);
                if (held)
                    PyBuffer_Release(&b);
                failed = 1;
                break;
            }
            memcpy(base + o, p, (size_t)size); /* the copy first: it may fail */
            if (held)
                PyBuffer_Release(&b);
            if (src->put(src, i + t, hb + ((unsigned long long)w << 4)) < 0) {
                failed = 1;
                break;
            }
            uint64_t link, tag = (owner << 1) | 1;
            memcpy(&link, base + hoff, 8);
            memcpy(base + hoff, &tag, 8);
            w = link ? (Py_ssize_t)(link >> 1) - 1 : w + wsize;
            done_here++;
        }
        /* _fill's finally: account what was stored, put the zspage back. */
        n += done_here;
        added += done_here;
        i += done_here;
        if (list_set_ssize(inuse, z, n) < 0 || list_set_ssize(freeobj, z, w) < 0)
            goto done;
        if (n) {
            if (list_ssize(fg, n, &g) < 0)
                goto done;
            if (g != 11) { /* ZS_INUSE_RATIO_100 is never stored */
                if (g < 0 || g >= PyList_GET_SIZE(groups)) {
                    PyErr_Format(PyExc_ValueError, "%s: group %zd missing", fn, g);
                    goto done;
                }
                PyObject *key = PyLong_FromSsize_t(z);
                if (key == NULL)
                    goto done;
                int r = PyObject_SetItem(PyList_GET_ITEM(groups, g), key, Py_None);
                Py_DECREF(key);
                if (r < 0)
                    goto done;
                mask |= 1ULL << g;
            }
        }
        if (failed)
            goto done;
    }
    result = i;

done:
    if (have_bv)
        PyBuffer_Release(&bv);
    if (groups != NULL) {
        /* Counters as far as objects were stored, on every path. */
        PyObject *exc_type, *exc_value, *exc_tb;
        PyErr_Fetch(&exc_type, &exc_value, &exc_tb);
        PyObject *mv = PyLong_FromUnsignedLongLong(mask);
        PyObject *uv = PyLong_FromSsize_t(used + added);
        int bad = mv == NULL || uv == NULL || PyObject_SetAttr(cls, s_mask, mv) < 0
                  || PyObject_SetAttr(cls, s_used, uv) < 0;
        Py_XDECREF(mv);
        Py_XDECREF(uv);
        if (exc_type != NULL) {
            if (bad)
                PyErr_Clear();
            PyErr_Restore(exc_type, exc_value, exc_tb);
        }
        else if (bad) {
            result = -1;
        }
    }
    Py_XDECREF(inuse);
    Py_XDECREF(freeobj);
    Py_XDECREF(bvs);
    Py_XDECREF(hbase);
    Py_XDECREF(fg);
    Py_XDECREF(groups);
    return result;
}

/* zs_fill's objects: Python lists indexed by ks[t]. */
typedef struct {
    FillSrc base;
    PyObject *ks, *blobs, *sizes, *owners, *handles;
} ListSrc;

static int
list_src_index(ListSrc *s, Py_ssize_t t, Py_ssize_t *k)
{
    *k = PyLong_AsSsize_t(PyList_GET_ITEM(s->ks, t));
    if (*k == -1 && PyErr_Occurred())
        return -1;
    if (*k < 0 || *k >= PyList_GET_SIZE(s->blobs) || *k >= PyList_GET_SIZE(s->sizes)
        || *k >= PyList_GET_SIZE(s->owners) || *k >= PyList_GET_SIZE(s->handles)) {
        PyErr_Format(PyExc_IndexError, "zs_fill: object %zd out of range", *k);
        return -1;
    }
    return 0;
}

static int
list_src_get(FillSrc *fs, Py_ssize_t t, Py_buffer *hold, int *held, const char **p,
             Py_ssize_t *size, unsigned long long *owner)
{
    ListSrc *s = (ListSrc *)fs;
    Py_ssize_t k;
    if (list_src_index(s, t, &k) < 0 || list_ssize(s->sizes, k, size) < 0)
        return -1;
    *owner = PyLong_AsUnsignedLongLong(PyList_GET_ITEM(s->owners, k));
    if (*owner == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    if (PyObject_GetBuffer(PyList_GET_ITEM(s->blobs, k), hold, PyBUF_SIMPLE) < 0)
        return -1;
    if (hold->len != *size) {
        PyErr_Format(PyExc_ValueError, "zs_fill: blob %zd has %zd bytes, its size is %zd", k,
                     hold->len, *size);
        PyBuffer_Release(hold);
        return -1;
    }
    *held = 1;
    *p = hold->buf;
    return 0;
}

static int
list_src_put(FillSrc *fs, Py_ssize_t t, unsigned long long handle)
{
    ListSrc *s = (ListSrc *)fs;
    Py_ssize_t k;
    if (list_src_index(s, t, &k) < 0)
        return -1;
    PyObject *h = PyLong_FromUnsignedLongLong(handle);
    if (h == NULL)
        return -1;
    return PyList_SetItem(s->handles, k, h); /* steals h */
}

static PyObject *
zs_fill(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs)
{
    const char *fn = "zs_fill";
    Py_ssize_t i;
    if (!nargs_ok(fn, nargs, 8))
        return NULL;
    ListSrc src = {{list_src_get, list_src_put}, args[2], args[4], args[5], args[6], args[7]};
    PyObject *zspages = args[1];
    if (ssize_arg(args[3], &i) < 0)
        return NULL;
    if (!PyList_Check(src.ks) || !PyList_Check(src.blobs) || !PyList_Check(src.sizes)
        || !PyList_Check(src.owners) || !PyList_Check(src.handles)
        || (zspages != Py_None && !PyList_Check(zspages))) {
        PyErr_Format(PyExc_TypeError, "%s: ks, blobs, sizes, owners, handles (and zspages) "
                                      "must be lists", fn);
        return NULL;
    }
    if (i < 0 || i > PyList_GET_SIZE(src.ks)) {
        PyErr_Format(PyExc_ValueError, "%s: i = %zd is outside ks", fn, i);
        return NULL;
    }
    i = fill_class(fn, args[0], zspages == Py_None ? NULL : zspages, &src.base, i,
                   PyList_GET_SIZE(src.ks));
    return i < 0 ? NULL : PyLong_FromSsize_t(i);
}

/* ------------------------------------------------ zsmalloc batch store */

PyDoc_STRVAR(zs_store_batch_doc,
"zs_store_batch($module, pool, out, sizes, lo, hi, data, pos, first, handle, attr, bits,\n"
"               huge_bit, same_bit, /)\n"
"--\n"
"\n"
"Returns (compr_bytes, huge_pages, same_pages).\n"
"\n"
"ZramDevice._commit_fresh for pages lo..hi-1 of a batch compressed by\n"
"lz4_compress_pages / lz4_compress_begin (`out`, `sizes`: block k at\n"
"k*4096, sizes[k] uint16 LE; 0 = same-filled, >= pool.huge_class_size =\n"
"stored raw) or, when `out` is a list, by any codec (out[k] is page k's\n"
"frame of sizes[k] bytes, which may exceed 4096: stored raw), whose raw\n"
"pages are `data` from `pos` (page lo at pos), into\n"
"empty slots first..first+hi-lo-1 of a table (`handle`, `attr`: writable\n"
"u64 buffers).  The pool ends exactly as ZsPool.store_many of the same\n"
"objects leaves it (classes in order, partial zspages fullest first, then\n"
"pool._alloc_zspages, huge pages one zspage each); slot k gets the handle\n"
"and size | bits (| huge_bit for a raw page), or for a same-filled page\n"
"its fill word and same_bit | bits.  If anything fails (ENOMEM from\n"
"_alloc_zspages), the objects stored so far are freed (pool.free) and the\n"
"table is not touched.\n"
"\n"
"Why: a 1 MiB write is ~256 objects in ~50 classes; store_many's Python\n"
"(sort, group, per-class calls, one handle and attribute object per page)\n"
"cost more than the copies.  Keeps the GIL.");

typedef struct {
    const char *p;
    Py_ssize_t size;
    unsigned long long owner, handle, word;
    int ord; /* class position in pool._classes; -1: same-filled */
} BatchObj;

typedef struct {
    FillSrc base;
    BatchObj *objs;
    const Py_ssize_t *order; /* this class's objects, in page order */
} BatchSrc;

static int
batch_src_get(FillSrc *fs, Py_ssize_t t, Py_buffer *hold, int *held, const char **p,
              Py_ssize_t *size, unsigned long long *owner)
{
    (void)hold;
    BatchSrc *s = (BatchSrc *)fs;
    const BatchObj *o = &s->objs[s->order[t]];
    *held = 0;
    *p = o->p;
    *size = o->size;
    *owner = o->owner;
    return 0;
}

static int
batch_src_put(FillSrc *fs, Py_ssize_t t, unsigned long long handle)
{
    BatchSrc *s = (BatchSrc *)fs;
    s->objs[s->order[t]].handle = handle;
    return 0;
}

/* A list of ints from runs [(z0, nz), ...] as _alloc_zspages returns them. */
static PyObject *
runs_slots(PyObject *runs, Py_ssize_t want)
{
    if (!PyList_Check(runs)) {
        PyErr_SetString(PyExc_TypeError, "zs_store_batch: _alloc_zspages must return a list");
        return NULL;
    }
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t r = 0; r < PyList_GET_SIZE(runs); r++) {
        Py_ssize_t z0, nz;
        PyObject *run = PyList_GET_ITEM(runs, r);
        if (!PyTuple_Check(run) || PyTuple_GET_SIZE(run) != 2) {
            PyErr_SetString(PyExc_TypeError, "zs_store_batch: a run must be (slot, count)");
            goto fail;
        }
        z0 = PyLong_AsSsize_t(PyTuple_GET_ITEM(run, 0));
        nz = PyLong_AsSsize_t(PyTuple_GET_ITEM(run, 1));
        if ((z0 == -1 || nz == -1) && PyErr_Occurred())
            goto fail;
        for (Py_ssize_t z = z0; z < z0 + nz; z++) {
            PyObject *zo = PyLong_FromSsize_t(z);
            if (zo == NULL || PyList_Append(out, zo) < 0) {
                Py_XDECREF(zo);
                goto fail;
            }
            Py_DECREF(zo);
        }
    }
    if (PyList_GET_SIZE(out) != want) {
        PyErr_SetString(PyExc_ValueError, "zs_store_batch: _alloc_zspages gave a wrong count");
        goto fail;
    }
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}

/* Give back the fresh zspages of `slots` still empty (ZsPool._free_zspage),
 * keeping the pending exception. */
static void
free_empty_zspages(PyObject *pool, PyObject *cls, PyObject *slots)
{
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    PyObject *inuse = attr_list(cls, s_inuse);
    if (inuse != NULL) {
        for (Py_ssize_t j = 0; j < PyList_GET_SIZE(slots); j++) {
            Py_ssize_t z = PyLong_AsSsize_t(PyList_GET_ITEM(slots, j)), n = 1;
            if (z >= 0 && z < PyList_GET_SIZE(inuse))
                n = PyLong_AsSsize_t(PyList_GET_ITEM(inuse, z));
            if (n == 0) {
                PyObject *r = PyObject_CallMethodObjArgs(pool, s_free_zspage, cls,
                                                         PyList_GET_ITEM(slots, j), NULL);
                Py_XDECREF(r);
            }
            PyErr_Clear();
        }
        Py_DECREF(inuse);
    }
    PyErr_Clear();
    PyErr_Restore(et, ev, tb);
}

/* ---- zs_alloc_zspages: ZsPool._alloc_zspages's common case ---------------- */

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14 */
#endif

static PyObject *heap_pop, *heap_push; /* _heapq.heappop / heappush */

static int
load_heapq(void)
{
    if (heap_pop != NULL)
        return 0;
    PyObject *m = PyImport_ImportModule("_heapq");
    if (m == NULL)
        return -1;
    heap_push = PyObject_GetAttrString(m, "heappush");
    heap_pop = heap_push != NULL ? PyObject_GetAttrString(m, "heappop") : NULL;
    Py_DECREF(m);
    if (heap_pop == NULL) {
        Py_CLEAR(heap_push);
        return -1;
    }
    return 0;
}

/* Set the int attribute `name` of `o` to v. */
static int
attr_set_ssize(PyObject *o, PyObject *name, Py_ssize_t v)
{
    PyObject *x = PyLong_FromSsize_t(v);
    if (x == NULL)
        return -1;
    int r = PyObject_SetAttr(o, name, x);
    Py_DECREF(x);
    return r;
}

/* The address of byte `off` of segment si's mapping (cls.bvs[si]), checking
 * that `len` bytes from there are inside it. */
static char *
segment_at(PyObject *bvs, Py_ssize_t si, Py_ssize_t off, Py_ssize_t len)
{
    Py_buffer b;
    if (si < 0 || si >= PyList_GET_SIZE(bvs)) {
        PyErr_Format(PyExc_IndexError, "zs_alloc_zspages: segment %zd out of range", si);
        return NULL;
    }
    if (PyObject_GetBuffer(PyList_GET_ITEM(bvs, si), &b, PyBUF_SIMPLE) < 0)
        return NULL;
    char *p = (char *)b.buf + off;
    int ok = off >= 0 && len <= b.len - off;
    PyBuffer_Release(&b); /* the mapping stays: cls.segs[si] holds it */
    if (!ok) {
        PyErr_Format(PyExc_ValueError, "zs_alloc_zspages: zspage run outside segment %zd", si);
        return NULL;
    }
    return p;
}

PyDoc_STRVAR(zs_alloc_zspages_doc,
"zs_alloc_zspages(pool, cls, n, dontneed) -> runs | errno\n"
"\n"
"ZsPool._alloc_zspages in C, for kernels with MADV_POPULATE_WRITE: the n\n"
"lowest free zspage slots of class cls (heap cls.free_slots; pool._grow\n"
"when it runs empty, pool._map_segment for a segment not mapped yet), made\n"
"resident with one madvise per run of neighbouring slots in one segment,\n"
"then the same bookkeeping (seg_live, spare, freeobj, nzspages, allocated,\n"
"pool._pages, pool.peak_pages).  Returns the runs [(first slot, count)]\n"
"in slot order.  If a madvise fails, the runs already resident are given\n"
"back (dontneed(mmap, offset, length): zsmalloc._dontneed, which also\n"
"handles mlockall), the slots return to the heap, nothing else has changed, and the\n"
"madvise's errno (an int) is returned for the caller to act on.");

static PyObject *
zs_alloc_zspages(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *pool, *cls, *heap = NULL, *segs = NULL, *bvs = NULL, *seg_live = NULL,
             *freeobj = NULL, *runs = NULL, *result = NULL;
    Py_ssize_t n, shift, smask, zbytes, zwords, objs, ppz, spare, popped = 0, nruns = 0, done = 0;
    Py_ssize_t *zs = NULL, *r0 = NULL, *rn = NULL;
    int err = 0;

    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "zs_alloc_zspages(pool, cls, n, dontneed)");
        return NULL;
    }
    pool = args[0];
    cls = args[1];
    n = PyLong_AsSsize_t(args[2]);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    if (n < 1) {
        PyErr_SetString(PyExc_ValueError, "zs_alloc_zspages: n must be >= 1");
        return NULL;
    }
    if (load_heapq() < 0 || attr_ssize(cls, s_shift, &shift) < 0
        || attr_ssize(cls, s_smask, &smask) < 0 || attr_ssize(cls, s_zbytes, &zbytes) < 0
        || attr_ssize(cls, s_zwords, &zwords) < 0 || attr_ssize(cls, s_objs, &objs) < 0
        || attr_ssize(cls, s_ppz, &ppz) < 0)
        return NULL;
    zs = PyMem_New(Py_ssize_t, (size_t)n * 3);
    if (zs == NULL)
        return PyErr_NoMemory();
    r0 = zs + n;
    rn = r0 + n;
    if ((heap = attr_list(cls, s_free_slots)) == NULL)
        goto out;
    /* The n lowest free slots, growing the slot space as _alloc_zspages does. */
    while (popped < n) {
        if (PyList_GET_SIZE(heap) == 0) {
            PyObject *r = PyObject_CallMethodObjArgs(pool, s_grow, cls, NULL);
            if (r == NULL)
                goto out;
            Py_DECREF(r);
            Py_SETREF(heap, attr_list(cls, s_free_slots));
            if (heap == NULL)
                goto out;
            if (PyList_GET_SIZE(heap) == 0) {
                PyErr_SetString(PyExc_RuntimeError, "zs_alloc_zspages: _grow added no slot");
                goto out;
            }
        }
        PyObject *zo = PyObject_CallOneArg(heap_pop, heap);
        if (zo == NULL)
            goto out;
        Py_ssize_t z = PyLong_AsSsize_t(zo);
        if (z < 0) {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_ValueError, "zs_alloc_zspages: bad slot %zd", z);
            PyObject *r = PyObject_CallFunctionObjArgs(heap_push, heap, zo, NULL);
            Py_XDECREF(r);
            Py_DECREF(zo);
            goto out;
        }
        Py_DECREF(zo);
        zs[popped++] = z;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (nruns && zs[i] == r0[nruns - 1] + rn[nruns - 1]
            && zs[i] >> shift == r0[nruns - 1] >> shift) {
            rn[nruns - 1]++;
        } else {
            r0[nruns] = zs[i];
            rn[nruns++] = 1;
        }
    }
    if ((runs = PyList_New(nruns)) == NULL)
        goto out;
    for (Py_ssize_t r = 0; r < nruns; r++) {
        PyObject *t = Py_BuildValue("(nn)", r0[r], rn[r]);
        if (t == NULL)
            goto out;
        PyList_SET_ITEM(runs, r, t);
    }
    if ((segs = attr_list(cls, s_segs)) == NULL || (bvs = attr_list(cls, s_bvs)) == NULL
        || (seg_live = attr_list(cls, s_seg_live)) == NULL
        || (freeobj = attr_list(cls, s_freeobj)) == NULL)
        goto out;
    /* Resident, run by run (the only step that can fail for want of memory). */
    for (; done < nruns; done++) {
        Py_ssize_t si = r0[done] >> shift;
        if (si < 0 || si >= PyList_GET_SIZE(segs)) {
            PyErr_Format(PyExc_IndexError, "zs_alloc_zspages: segment %zd out of range", si);
            goto undo;
        }
        if (PyList_GET_ITEM(segs, si) == Py_None) {
            PyObject *sio = PyLong_FromSsize_t(si), *r = NULL;
            if (sio != NULL)
                r = PyObject_CallMethodObjArgs(pool, s_map_segment, cls, sio, NULL);
            Py_XDECREF(sio);
            if (r == NULL)
                goto undo;
            Py_DECREF(r);
        }
        char *p = segment_at(bvs, si, (r0[done] & smask) * zbytes, rn[done] * zbytes);
        if (p == NULL)
            goto undo;
        if (madvise(p, (size_t)(rn[done] * zbytes), MADV_POPULATE_WRITE) != 0) {
            err = errno;
            goto undo;
        }
    }
    /* The bookkeeping of _alloc_zspages (cannot fail short of MemoryError;
     * the slots are taken from here on). */
    popped = 0;
    if (attr_ssize(cls, s_spare, &spare) < 0)
        goto out;
    for (Py_ssize_t r = 0; r < nruns; r++) {
        Py_ssize_t si = r0[r] >> shift, live, w0 = (r0[r] & smask) * zwords;
        if (list_ssize(seg_live, si, &live) < 0 || list_set_ssize(seg_live, si, live + rn[r]) < 0)
            goto out;
        if (spare == si) {
            spare = -1;
            if (attr_set_ssize(cls, s_spare, -1) < 0)
                goto out;
        }
        /* init_zspage(): freeobj = object 0, chain 0 -> 1 -> 2 ... */
        for (Py_ssize_t j = 0; j < rn[r]; j++) {
            Py_ssize_t z = r0[r] + j, old;
            if (list_ssize(freeobj, z, &old) < 0 || list_set_ssize(freeobj, z, w0 + j * zwords) < 0)
                goto out;
        }
    }
    Py_ssize_t nz, alloc, pages, peak;
    if (attr_ssize(cls, s_nzspages, &nz) < 0 || attr_set_ssize(cls, s_nzspages, nz + n) < 0
        || attr_ssize(cls, s_allocated, &alloc) < 0
        || attr_set_ssize(cls, s_allocated, alloc + n * objs) < 0
        || attr_ssize(pool, s_pages, &pages) < 0
        || attr_set_ssize(pool, s_pages, pages + n * ppz) < 0
        || attr_ssize(pool, s_peak_pages, &peak) < 0
        || (pages + n * ppz > peak && attr_set_ssize(pool, s_peak_pages, pages + n * ppz) < 0))
        goto out;
    result = runs;
    runs = NULL;
    goto out;
undo:
    {
        PyObject *et, *ev, *tb;
        PyErr_Fetch(&et, &ev, &tb);
        for (Py_ssize_t r = 0; r < done; r++) {
            /* (done runs had their segment mapped and checked above) */
            PyObject *mm = PyList_GET_ITEM(segs, r0[r] >> shift);
            PyObject *r_ = PyObject_CallFunction(args[3], "Onn", mm, (r0[r] & smask) * zbytes,
                                                 rn[r] * zbytes);
            Py_XDECREF(r_); /* best effort: it only undoes a populate */
            PyErr_Clear();
        }
        PyErr_Restore(et, ev, tb);
    }
    if (err)
        result = PyLong_FromLong(err); /* (no exception is set: madvise failed) */
out:
    if (popped && heap != NULL) {
        /* Failed: the slots go back, keeping any pending exception. */
        PyObject *et, *ev, *tb;
        PyErr_Fetch(&et, &ev, &tb);
        for (Py_ssize_t i = 0; i < popped; i++) {
            PyObject *zo = PyLong_FromSsize_t(zs[i]), *r = NULL;
            if (zo != NULL)
                r = PyObject_CallFunctionObjArgs(heap_push, heap, zo, NULL);
            Py_XDECREF(zo);
            Py_XDECREF(r);
            PyErr_Clear();
        }
        PyErr_Restore(et, ev, tb);
    }
    PyMem_Free(zs);
    Py_XDECREF(heap);
    Py_XDECREF(segs);
    Py_XDECREF(bvs);
    Py_XDECREF(seg_live);
    Py_XDECREF(freeobj);
    Py_XDECREF(runs);
    return result;
}

/* ZsPool._store_huge for the m objects of `order`: a new zspage each. */
static int
store_huge(PyObject *pool, PyObject *cls, BatchObj *objs, const Py_ssize_t *order,
           Py_ssize_t m)
{
    Py_ssize_t shift, smask, zwords, used, filled = 0;
    PyObject *mo = NULL, *runs = NULL, *slots = NULL, *bvs = NULL, *hbase = NULL,
             *howner = NULL, *inuse = NULL;
    int rc = -1;

    if (attr_ssize(cls, s_shift, &shift) < 0 || attr_ssize(cls, s_smask, &smask) < 0
        || attr_ssize(cls, s_zwords, &zwords) < 0)
        return -1;
    if ((mo = PyLong_FromSsize_t(m)) == NULL)
        return -1;
    runs = PyObject_CallMethodObjArgs(pool, s_alloc_zspages, cls, mo, NULL);
    Py_DECREF(mo);
    if (runs == NULL)
        return -1;
    if ((slots = runs_slots(runs, m)) == NULL) {
        Py_DECREF(runs);
        return -1;
    }
    Py_DECREF(runs);
    if (attr_ssize(cls, s_used, &used) < 0 || (bvs = attr_list(cls, s_bvs)) == NULL
        || (hbase = attr_list(cls, s_hbase)) == NULL
        || (howner = attr_list(cls, s_howner)) == NULL
        || (inuse = attr_list(cls, s_inuse)) == NULL)
        goto out;
    for (; filled < m; filled++) {
        BatchObj *o = &objs[order[filled]];
        Py_ssize_t z = PyLong_AsSsize_t(PyList_GET_ITEM(slots, filled)), si = z >> shift;
        Py_ssize_t w0 = (z & smask) * zwords;
        Py_buffer bv;
        if (si < 0 || si >= PyList_GET_SIZE(bvs) || si >= PyList_GET_SIZE(hbase)
            || z >= PyList_GET_SIZE(howner) || z >= PyList_GET_SIZE(inuse)) {
            PyErr_Format(PyExc_IndexError, "zs_store_batch: zspage %zd out of range", z);
            goto out;
        }
        if (PyObject_GetBuffer(PyList_GET_ITEM(bvs, si), &bv, PyBUF_WRITABLE) < 0)
            goto out;
        if (w0 * 8 > bv.len - o->size) {
            PyErr_Format(PyExc_ValueError, "zs_store_batch: zspage %zd does not fit", z);
            PyBuffer_Release(&bv);
            goto out;
        }
        memcpy((char *)bv.buf + w0 * 8, o->p, (size_t)o->size);
        PyBuffer_Release(&bv);
        unsigned long long hb = PyLong_AsUnsignedLongLong(PyList_GET_ITEM(hbase, si));
        if (hb == (unsigned long long)-1 && PyErr_Occurred())
            goto out;
        PyObject *ov = PyLong_FromUnsignedLongLong(o->owner);
        if (ov == NULL || PyList_SetItem(howner, z, ov) < 0 || list_set_ssize(inuse, z, 1) < 0)
            goto out;
        o->handle = hb + ((unsigned long long)w0 << 4);
    }
    rc = 0;
out:
    if (filled) {
        PyObject *et, *ev, *tb;
        PyErr_Fetch(&et, &ev, &tb);
        PyObject *uv = PyLong_FromSsize_t(used + filled);
        if (uv == NULL || PyObject_SetAttr(cls, s_used, uv) < 0)
            rc = -1;
        Py_XDECREF(uv);
        if (et != NULL) {
            PyErr_Clear();
            PyErr_Restore(et, ev, tb);
        }
    }
    if (rc < 0)
        free_empty_zspages(pool, cls, slots);
    Py_XDECREF(slots);
    Py_XDECREF(bvs);
    Py_XDECREF(hbase);
    Py_XDECREF(howner);
    Py_XDECREF(inuse);
    return rc;
}

/* The objects of one non-huge class: partial zspages, then new ones. */
static int
store_class(PyObject *pool, PyObject *cls, BatchObj *objs, const Py_ssize_t *order,
            Py_ssize_t m)
{
    BatchSrc src = {{batch_src_get, batch_src_put}, objs, order};
    Py_ssize_t objs_per, i = fill_class("zs_store_batch", cls, NULL, &src.base, 0, m);
    if (i < 0)
        return -1;
    if (i == m)
        return 0;
    if (attr_ssize(cls, s_objs, &objs_per) < 0)
        return -1;
    Py_ssize_t nz = (m - i + objs_per - 1) / objs_per;
    PyObject *no = PyLong_FromSsize_t(nz);
    if (no == NULL)
        return -1;
    PyObject *runs = PyObject_CallMethodObjArgs(pool, s_alloc_zspages, cls, no, NULL);
    Py_DECREF(no);
    if (runs == NULL)
        return -1;
    PyObject *slots = runs_slots(runs, nz);
    Py_DECREF(runs);
    if (slots == NULL)
        return -1;
    i = fill_class("zs_store_batch", cls, slots, &src.base, i, m);
    if (i >= 0 && i != m) {
        PyErr_SetString(PyExc_ValueError, "zs_store_batch: new zspages did not hold the batch");
        i = -1;
    }
    if (i < 0)
        free_empty_zspages(pool, cls, slots);
    Py_DECREF(slots);
    return i < 0 ? -1 : 0;
}

static PyObject *
zs_store_batch(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs)
{
    const char *fn = "zs_store_batch";
    PyObject *pool, *classes = NULL, *ordt = NULL, *result = NULL;
    Py_buffer out = {0}, sizes = {0}, data = {0}, ht = {0}, at = {0}, ob = {0};
    int have_out = 0, have_sizes = 0, have_data = 0, have_ht = 0, have_at = 0, have_ob = 0;
    Py_ssize_t lo, hi, pos, first, n, huge_size, ncls;
    unsigned long long bits, huge_bit, same_bit;
    BatchObj *objs = NULL;
    Py_ssize_t *order = NULL, *start = NULL, nheld = 0;
    PyObject *frames = NULL; /* a list: frames mode */
    Py_buffer *held = NULL;  /* frames mode: the frames' buffers */
    long long compr = 0;
    Py_ssize_t nhuge = 0, nsame = 0;

    if (!nargs_ok(fn, nargs, 13) || intern_names() < 0)
        return NULL;
    pool = args[0];
    if (ssize_arg(args[3], &lo) < 0 || ssize_arg(args[4], &hi) < 0
        || ssize_arg(args[6], &pos) < 0 || ssize_arg(args[7], &first) < 0)
        return NULL;
    bits = PyLong_AsUnsignedLongLong(args[10]);
    huge_bit = PyLong_AsUnsignedLongLong(args[11]);
    same_bit = PyLong_AsUnsignedLongLong(args[12]);
    if (PyErr_Occurred())
        return NULL;
    if (lo < 0 || hi < lo || first < 0) {
        PyErr_Format(PyExc_ValueError, "%s: bad page range", fn);
        return NULL;
    }
    n = hi - lo;
    if (PyList_Check(args[1])) {
        /* Frames mode: out[k] is page k's object (sizes[k] bytes). */
        frames = args[1];
        if (PyList_GET_SIZE(frames) < hi) {
            PyErr_Format(PyExc_ValueError, "%s: fewer frames than pages", fn);
            goto done;
        }
        if ((held = PyMem_Calloc((size_t)n + 1, sizeof(Py_buffer))) == NULL) {
            PyErr_NoMemory();
            goto done;
        }
    }
    else {
        if (PyObject_GetBuffer(args[1], &out, PyBUF_SIMPLE) < 0)
            goto done;
        have_out = 1;
    }
    if (PyObject_GetBuffer(args[2], &sizes, PyBUF_SIMPLE) < 0)
        goto done;
    have_sizes = 1;
    if (PyObject_GetBuffer(args[5], &data, PyBUF_SIMPLE) < 0)
        goto done;
    have_data = 1;
    if (PyObject_GetBuffer(args[8], &ht, PyBUF_WRITABLE) < 0)
        goto done;
    have_ht = 1;
    if (PyObject_GetBuffer(args[9], &at, PyBUF_WRITABLE) < 0)
        goto done;
    have_at = 1;
    if ((frames == NULL && out.len < hi * PAGE) || sizes.len < hi * 2
        || !pages_in(fn, pos, n, data.len)
        || ht.len / 8 < first + n || at.len / 8 < first + n) {
        if (!PyErr_Occurred())
            PyErr_Format(PyExc_ValueError, "%s: a buffer is too short for the pages", fn);
        goto done;
    }
    if (attr_ssize(pool, s_huge_class_size, &huge_size) < 0
        || (classes = attr_list(pool, s_classes)) == NULL
        || (ordt = PyObject_GetAttr(pool, s_ord_table)) == NULL)
        goto done;
    if (PyObject_GetBuffer(ordt, &ob, PyBUF_SIMPLE) < 0)
        goto done;
    have_ob = 1;
    ncls = PyList_GET_SIZE(classes);
    if (ob.len != 2 * (PAGE + 1) || huge_size < 1 || huge_size > PAGE) {
        PyErr_Format(PyExc_ValueError, "%s: pool tables out of shape", fn);
        goto done;
    }
    objs = PyMem_Calloc((size_t)n + 1, sizeof(BatchObj));
    order = PyMem_Calloc((size_t)n + 1, sizeof(Py_ssize_t));
    start = PyMem_Calloc((size_t)ncls + 2, sizeof(Py_ssize_t));
    if (objs == NULL || order == NULL || start == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    const unsigned char *sz = sizes.buf;
    const uint16_t *ords = ob.buf;
    for (Py_ssize_t k = 0; k < n; k++) {
        BatchObj *o = &objs[k];
        const char *page = (const char *)data.buf + pos + k * PAGE;
        Py_ssize_t size = sz[2 * (lo + k)] | (Py_ssize_t)sz[2 * (lo + k) + 1] << 8;
        o->owner = (unsigned long long)(first + k);
        if (size == 0) {
            /* lz4_compress_pages's mark of a same-filled page. */
            memcpy(&o->word, page, 8);
            o->ord = -1;
            nsame++;
            continue;
        }
        if (frames != NULL) {
            if (PyObject_GetBuffer(PyList_GET_ITEM(frames, lo + k), &held[nheld], PyBUF_SIMPLE)
                < 0)
                goto done;
            const Py_buffer *fb = &held[nheld++];
            if (fb->len != size) {
                PyErr_Format(PyExc_ValueError, "%s: frame %zd has %zd bytes, its size is %zd",
                             fn, lo + k, fb->len, size);
                goto done;
            }
            o->p = fb->buf;
        }
        else if (size > PAGE) {
            PyErr_Format(PyExc_ValueError, "%s: page %zd has size %zd", fn, lo + k, size);
            goto done;
        }
        else {
            o->p = (const char *)out.buf + (lo + k) * PAGE;
        }
        if (size >= huge_size) {
            o->p = page;
            size = PAGE;
            nhuge++;
        }
        o->size = size;
        o->ord = ords[size];
        if (o->ord >= ncls) {
            PyErr_Format(PyExc_ValueError, "%s: class %d out of range", fn, o->ord);
            goto done;
        }
        compr += size;
        start[o->ord + 1]++;
    }
    /* Counting sort by class, stable: each class's objects in page order. */
    for (Py_ssize_t c = 0; c < ncls; c++)
        start[c + 1] += start[c];
    {
        Py_ssize_t *fillp = PyMem_Calloc((size_t)ncls + 1, sizeof(Py_ssize_t));
        if (fillp == NULL) {
            PyErr_NoMemory();
            goto done;
        }
        memcpy(fillp, start, (size_t)ncls * sizeof(Py_ssize_t));
        for (Py_ssize_t k = 0; k < n; k++)
            if (objs[k].ord >= 0)
                order[fillp[objs[k].ord]++] = k;
        PyMem_Free(fillp);
    }
    for (Py_ssize_t c = 0; c < ncls; c++) {
        Py_ssize_t m = start[c + 1] - start[c];
        if (!m)
            continue;
        PyObject *cls = PyList_GET_ITEM(classes, c);
        PyObject *hv = PyObject_GetAttr(cls, s_huge);
        int huge = hv == NULL ? -1 : PyObject_IsTrue(hv);
        Py_XDECREF(hv);
        if (huge < 0)
            goto undo;
        if ((huge ? store_huge : store_class)(pool, cls, objs, order + start[c], m) < 0)
            goto undo;
    }
    {
        uint64_t *hv = (uint64_t *)ht.buf + first, *av = (uint64_t *)at.buf + first;
        for (Py_ssize_t k = 0; k < n; k++) {
            const BatchObj *o = &objs[k];
            if (o->ord < 0) {
                hv[k] = o->word;
                av[k] = same_bit | bits;
            }
            else {
                hv[k] = o->handle;
                av[k] = (unsigned long long)o->size | bits | (o->size == PAGE ? huge_bit : 0);
            }
        }
    }
    result = Py_BuildValue("(Lnn)", compr, nhuge, nsame);
    goto done;

undo: {
        /* store_many's except: free what was stored, keep the exception. */
        PyObject *et, *ev, *tb;
        PyErr_Fetch(&et, &ev, &tb);
        for (Py_ssize_t k = 0; k < n; k++) {
            if (objs[k].ord >= 0 && objs[k].handle) {
                PyObject *r = PyObject_CallMethod(pool, "free", "K", objs[k].handle);
                Py_XDECREF(r);
                PyErr_Clear();
            }
        }
        PyErr_Restore(et, ev, tb);
    }
done:
    for (Py_ssize_t k = 0; k < nheld; k++)
        PyBuffer_Release(&held[k]);
    PyMem_Free(held);
    PyMem_Free(objs);
    PyMem_Free(order);
    PyMem_Free(start);
    if (have_ob)
        PyBuffer_Release(&ob);
    Py_XDECREF(ordt);
    Py_XDECREF(classes);
    if (have_at)
        PyBuffer_Release(&at);
    if (have_ht)
        PyBuffer_Release(&ht);
    if (have_data)
        PyBuffer_Release(&data);
    if (have_sizes)
        PyBuffer_Release(&sizes);
    if (have_out)
        PyBuffer_Release(&out);
    return result;
}

/* ------------------------------------------------------- the read fast path */

/*
 * A 4 KiB read served in the pyfuse3 request handler itself
 * (Operations.read_nowait, patches/pyfuse3-3.5.0-nowait.patch): no
 * coroutine, no Python frame.  It is ZramOperations.read + ZramDevice.read's
 * path for a read whose slots all hold pages in RAM, written against the
 * Python objects, which stay the only state: every call looks the device up
 * again (handle -> image device -> registry), reads its lock word, table,
 * views, codec and clock, and gives up (having changed nothing: it calls
 * cfg's fallback, the Python read_nowait, or returns None) whenever the
 * Python path would do anything but decode: a
 * control file, a removed or uninitialized device, a device lock held or
 * awaited by a writer, an unaligned or long request, a request past the
 * end, a slot that is locked, written back or recompressed, a codec other
 * than the accelerated lz4, any error.  The fallback serves the one-page
 * reads it can without awaiting (any codec); for the rest pyfuse3 calls the
 * async `read`, which does it all again the general way (and raises what it
 * must).  A served read leaves what the Python path would: the slots'
 * ac_time stamped, one more grant in the device lock's stats, the block
 * statistics (read_ios, read_sectors, ticks) counted.  It holds the device
 * lock's share only while it runs, i.e. not at all as far as any task can
 * see: it never lets trio run.
 */


/* obj.name += delta (a Python int attribute); -1 on error. */
static int
attr_add(PyObject *obj, PyObject *name, long long delta)
{
    PyObject *v = PyObject_GetAttr(obj, name), *d, *r;
    if (v == NULL)
        return -1;
    d = PyLong_FromLongLong(delta);
    r = d == NULL ? NULL : PyNumber_Add(v, d);
    Py_DECREF(v);
    Py_XDECREF(d);
    if (r == NULL)
        return -1;
    int rc = PyObject_SetAttr(obj, name, r);
    Py_DECREF(r);
    return rc;
}

static long long
mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* The device's attribute `name`, a new reference; NULL (error cleared) if absent. */
static PyObject *
get(PyObject *o, PyObject *name)
{
    PyObject *v = PyObject_GetAttr(o, name);
    if (v == NULL)
        PyErr_Clear();
    return v;
}

/* What one request served here from t0 to t1 (CLOCK_MONOTONIC ns) leaves
 * in the Python books, as the async path's DevLock.try_read() and
 * BlockStat.start + done do: the device lock's grant, the disk's busy time
 * (io_ticks, when nothing else was in flight), time_in_queue, and the
 * kind's ticks, ios and sectors.  0, or -1 with an exception. */
static int
count_request(PyObject *dev, PyObject *dl, long long t0, long long t1, Py_ssize_t nbytes,
              int write)
{
    PyObject *ls = get(dl, s_stats), *b = get(dev, s_bstat), *v = NULL;
    long long ms = (t1 - t0) / 1000000;
    Py_ssize_t in_flight;
    int rc = -1;

    if (ls == NULL || b == NULL || attr_add(ls, s_acquired, 1) < 0
        || attr_ssize(b, s_in_flight, &in_flight) < 0)
        goto out;
    if (!in_flight) {
        v = PyLong_FromLongLong(t0);
        if (v == NULL || PyObject_SetAttr(b, s_busy_since, v) < 0
            || (ms && attr_add(b, s_io_ticks, ms) < 0))
            goto out;
    }
    if (ms && (attr_add(b, s_time_in_queue, ms) < 0
               || attr_add(b, write ? s_write_ticks : s_read_ticks, ms) < 0))
        goto out;
    if (attr_add(b, write ? s_write_ios : s_read_ios, 1) < 0
        || attr_add(b, write ? s_write_sectors : s_read_sectors, nbytes >> 9) < 0)
        goto out;
    rc = 0;
out:
    if (rc < 0 && !PyErr_Occurred())
        PyErr_SetString(PyExc_AttributeError, "zramfs: device statistics missing");
    Py_XDECREF(ls);
    Py_XDECREF(b);
    Py_XDECREF(v);
    return rc;
}

/* The live device behind an image file handle, for a request served
 * without a coroutine: registered (the handle's device is the registry's),
 * initialized (table and pool), and its device lock would grant a share as
 * DevLock.try_read() does (no writer holds or awaits it).  New references
 * into *o and 0, or -1 with nothing held (and no exception): "not here". */
typedef struct {
    PyObject *dev, *dl, *table, *pool;
} ImageDev;

static void
image_dev_release(ImageDev *o)
{
    Py_CLEAR(o->dev);
    Py_CLEAR(o->dl);
    Py_CLEAR(o->table);
    Py_CLEAR(o->pool);
}

static int
image_dev(PyObject *handles, PyObject *devices, PyObject *fh, unsigned long long busy,
          unsigned long long rmask, ImageDev *o)
{
    PyObject *h, *id = NULL, *words = NULL;
    int ok = 0;

    memset(o, 0, sizeof(*o));
    h = PyDict_GetItemWithError(handles, fh); /* borrowed */
    if (h == NULL || (o->dev = get(h, s_image)) == NULL || o->dev == Py_None)
        goto out;
    id = get(o->dev, s_id);
    if (id == NULL || PyDict_GetItemWithError(devices, id) != o->dev)
        goto out;
    o->dl = get(o->dev, s_dev_lock);
    words = o->dl == NULL ? NULL : attr_list(o->dl, s_words);
    if (words == NULL || PyList_GET_SIZE(words) != 1)
        goto out;
    unsigned long long w = PyLong_AsUnsignedLongLong(PyList_GET_ITEM(words, 0));
    if (PyErr_Occurred() || (w & busy) || (w & rmask) == rmask)
        goto out;
    o->table = get(o->dev, s_table);
    o->pool = get(o->dev, s_pool);
    ok = o->table != NULL && o->table != Py_None && o->pool != NULL && o->pool != Py_None;
out:
    PyErr_Clear();
    Py_XDECREF(id);
    Py_XDECREF(words);
    if (!ok)
        image_dev_release(o);
    return ok ? 0 : -1;
}

/* Everything but the bookkeeping after a successful decode: returns the
 * pages (new reference), or NULL with no exception set: "not here". */
static PyObject *
read_nowait_serve(PyObject *cfg, PyObject *const *args, PyObject **dev_out, PyObject **dl_out,
                  Py_ssize_t *bytes_out)
{
    /* cfg: (handles, devices, layout, split_min, lock_busy, reader_mask, actime_shift,
     *       fallback, split_pays, split_learn) */
    PyObject *handles = PyTuple_GET_ITEM(cfg, 0), *devices = PyTuple_GET_ITEM(cfg, 1);
    PyObject *layout = PyTuple_GET_ITEM(cfg, 2);
    Py_ssize_t split_min = PyLong_AsSsize_t(PyTuple_GET_ITEM(cfg, 3));
    unsigned long long busy = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(cfg, 4));
    unsigned long long rmask = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(cfg, 5));
    long shift = PyLong_AsLong(PyTuple_GET_ITEM(cfg, 6));
    ImageDev d = {0};
    PyObject *dev, *table;
    PyObject *comps = NULL, *comp = NULL, *fn = NULL, *clock = NULL;
    PyObject *t = NULL, *views = NULL, *attr = NULL, *handle = NULL, *out = NULL;
    PyObject *first_o = NULL, *stop_o = NULL, *now_o = NULL, *threads_o = NULL, *st = NULL;
    Py_ssize_t off, size, disksize;
    long threads = 1;

    if (PyErr_Occurred())
        goto fail;
    off = PyLong_AsSsize_t(args[1]);
    size = PyLong_AsSsize_t(args[2]);
    if (PyErr_Occurred() || off < 0 || size <= 0 || off % PAGE || size % PAGE)
        goto fail;
    if (image_dev(handles, devices, args[0], busy, rmask, &d) < 0)
        goto fail;
    dev = d.dev;
    table = d.table;
    if (attr_ssize(dev, s_disksize, &disksize) < 0 || off >= disksize || size > disksize - off)
        goto fail;
    comps = attr_list(dev, s_comps);
    if (comps == NULL || PyList_GET_SIZE(comps) < 1)
        goto fail;
    comp = Py_NewRef(PyList_GET_ITEM(comps, 0));
    fn = get(comp, s_decompress_slots);
    if (fn == NULL || !PyCFunction_Check(fn))
        goto fail;
    PyObject *(*slots)(PyObject *, PyObject *const *, Py_ssize_t) = NULL;
    if (PyCFunction_GET_FUNCTION(fn) == (PyCFunction)(void (*)(void))lz4_read_slots)
        slots = lz4_read_slots;
#ifdef ZRAMFS_ZSTD
    else if (PyCFunction_GET_FUNCTION(fn) == (PyCFunction)(void (*)(void))zstd_read_slots)
        slots = zstd_read_slots;
#endif
    else
        goto fail;
    clock = get(dev, s_clock);
    if (clock == NULL)
        goto fail;
    t = PyObject_CallNoArgs(clock);
    if (t == NULL)
        goto fail;
    {
        unsigned long long secs = PyLong_AsUnsignedLongLong(t);
        if (PyErr_Occurred() || shift < 0 || shift > 63)
            goto fail;
        now_o = PyLong_FromUnsignedLongLong(secs << shift);
    }
    views = get(dev, s_views);
    attr = get(table, s_attr);
    handle = get(table, s_handle);
    first_o = PyLong_FromSsize_t(off / PAGE);
    stop_o = PyLong_FromSsize_t((off + size) / PAGE);
    if (split_min > 0 && size / PAGE >= split_min) {
        /* ZramDevice._load_joined's _split_call("r", ...): the learned
         * decision, and the time taken fed back (only when served). */
        st = PyObject_CallOneArg(PyTuple_GET_ITEM(cfg, 8), comp);
        if (st == NULL || !PyList_Check(st) || PyList_GET_SIZE(st) < 4)
            goto fail;
        threads = 1 + PyLong_AsLong(PyList_GET_ITEM(st, 3));
        if (PyErr_Occurred())
            goto fail;
    }
    threads_o = PyLong_FromLong(threads);
    if (now_o == NULL || views == NULL || attr == NULL || handle == NULL || first_o == NULL
        || stop_o == NULL || threads_o == NULL)
        goto fail;
    {
        PyObject *call[8] = {views, attr, handle, first_o, stop_o, layout, now_o, threads_o};
        long long t_call = st != NULL ? mono_ns() : 0;
        out = slots(NULL, call, 8);
        if (out != NULL && out != Py_None && st != NULL) {
            PyObject *el = PyLong_FromLongLong(mono_ns() - t_call);
            PyObject *np = PyLong_FromSsize_t(size / PAGE);
            PyObject *r = NULL;
            if (el != NULL && np != NULL)
                r = PyObject_CallFunctionObjArgs(PyTuple_GET_ITEM(cfg, 9), st, el, np, NULL);
            Py_XDECREF(el);
            Py_XDECREF(np);
            Py_XDECREF(r); /* (a failure to learn is dropped: the read is served) */
        }
    }
    if (out == Py_None)
        Py_CLEAR(out);
    if (out != NULL) {
        *dev_out = Py_NewRef(dev);
        *dl_out = Py_NewRef(d.dl);
        *bytes_out = size;
    }
fail:
    PyErr_Clear();
    image_dev_release(&d);
    Py_XDECREF(comps);
    Py_XDECREF(comp);
    Py_XDECREF(fn);
    Py_XDECREF(clock);
    Py_XDECREF(t);
    Py_XDECREF(views);
    Py_XDECREF(attr);
    Py_XDECREF(handle);
    Py_XDECREF(first_o);
    Py_XDECREF(stop_o);
    Py_XDECREF(now_o);
    Py_XDECREF(threads_o);
    Py_XDECREF(st);
    return out;
}

PyDoc_STRVAR(read_nowait_doc,
"read_nowait($module, cfg, fh, off, size, /)\n"
"--\n"
"\n"
"Returns bytes, or None.\n"
"\n"
"pyfuse3's Operations.read_nowait for zramfs (bound with functools.partial\n"
"to cfg = (handles, devices, layout, split_min, lock_busy, reader_mask,\n"
"actime_shift, fallback, split_pays, split_learn)): the image file's read of\n"
"whole pages when every slot holds a page in RAM and the primary codec is\n"
"the accelerated lz4, done here and counted as ZramDevice.read counts it;\n"
"from split_min pages on (0: never) over the threads split_pays(codec)\n"
"decides, its time fed back to split_learn, as ZramDevice._load_joined does.\n"
"Anything else, having changed nothing, is fallback(fh, off, size) (the\n"
"Python read_nowait), or None when fallback is None (the caller then awaits\n"
"the async read).  Raises only what fallback raises.  See the comment above\n"
"it in _zpages.c for which attributes of ZramOperations / ZramDevice it\n"
"reads.");

static PyObject *
read_nowait(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *dev = NULL, *dl = NULL, *out;
    Py_ssize_t nbytes = 0;

    if (!nargs_ok("read_nowait", nargs, 4))
        return NULL;
    if (!PyTuple_Check(args[0]) || PyTuple_GET_SIZE(args[0]) != 10) {
        PyErr_SetString(PyExc_TypeError, "read_nowait: cfg must be a tuple of 10");
        return NULL;
    }
    long long t0 = mono_ns();
    out = read_nowait_serve(args[0], args + 1, &dev, &dl, &nbytes);
    if (out == NULL) {
        PyObject *fallback = PyTuple_GET_ITEM(args[0], 7);
        if (fallback == Py_None)
            Py_RETURN_NONE;
        return PyObject_Vectorcall(fallback, args + 1, 3, NULL);
    }
    /* Served: the slots are stamped, so from here the read counts, come what
     * may (a failure to count is dropped: the reader gets its data). */
    if (count_request(dev, dl, t0, mono_ns(), nbytes, 0) < 0)
        PyErr_Clear();
    Py_DECREF(dev);
    Py_DECREF(dl);
    return out;
}

PyDoc_STRVAR(boottime_seconds_doc,
"boottime_seconds($module, /)\n"
"--\n"
"\n"
"(u32)ktime_get_boottime_seconds(): CLOCK_BOOTTIME's whole seconds, mod 2**32.");

static PyObject *
boottime_seconds(PyObject *Py_UNUSED(self), PyObject *Py_UNUSED(ignored))
{
    struct timespec ts;
    if (clock_gettime(CLOCK_BOOTTIME, &ts) < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    return PyLong_FromUnsignedLong((unsigned long)((uint64_t)ts.tv_sec & 0xFFFFFFFFu));
}

/* --------------------------------------------- zsmalloc: one object at a time */

/*
 * ZsPool.store and ZsPool.free for one object, on the pool's own Python
 * state, as zs_fill does for a run: the write fast path's allocator.  Each
 * follows its Python twin statement by statement (same zspage, same object,
 * same fullness-list order), so the pool cannot tell which one ran;
 * tests/test_zpages.py runs random histories through both and compares every
 * class's state.  A new zspage (ZsPool._alloc_zspage) and an emptied one
 * (ZsPool._free_zspage) are still the Python methods: the arena's mmaps and
 * free-slot heap live there, and those calls are rare next to the objects.
 *
 * Handle layout: zsmalloc.py's (bit 0 tag, bits 1..22 offset in segment,
 * bits 23.. segment); the module exports it as HANDLE_SEG_SHIFT /
 * HANDLE_OFF_MASK and zsmalloc.py uses these functions only if they match.
 */

#define ZS_H_SEG_SHIFT 23
#define ZS_H_OFF_MASK ((1ULL << 22) - 1)
#define ZS_H_WORD_MASK (ZS_H_OFF_MASK >> 3)
#define ZS_GROUPS 12
#define ZS_RATIO_100 11 /* never stored in a fullness list */

/* The _Class fields one object's malloc / free touch. */
typedef struct {
    PyObject *inuse, *freeobj, *fg, *groups, *bvs, *hbase, *howner; /* new references */
    Py_ssize_t shift, hdr, wsize, whdr, zwords, mask, used, ppz;
    int huge;
} ZsClass;

static void
zs_class_release(ZsClass *k)
{
    Py_CLEAR(k->inuse);
    Py_CLEAR(k->freeobj);
    Py_CLEAR(k->fg);
    Py_CLEAR(k->groups);
    Py_CLEAR(k->bvs);
    Py_CLEAR(k->hbase);
    Py_CLEAR(k->howner);
}

static int
zs_class_load(PyObject *c, ZsClass *k)
{
    memset(k, 0, sizeof(*k));
    PyObject *hv = PyObject_GetAttr(c, s_huge);
    if (hv == NULL)
        return -1;
    k->huge = PyObject_IsTrue(hv);
    Py_DECREF(hv);
    if (k->huge < 0 || attr_ssize(c, s_shift, &k->shift) < 0 || attr_ssize(c, s_hdr, &k->hdr) < 0
        || attr_ssize(c, s_wsize, &k->wsize) < 0 || attr_ssize(c, s_whdr, &k->whdr) < 0
        || attr_ssize(c, s_zwords, &k->zwords) < 0 || attr_ssize(c, s_mask, &k->mask) < 0
        || attr_ssize(c, s_used, &k->used) < 0 || attr_ssize(c, s_ppz, &k->ppz) < 0)
        return -1;
    if (k->shift < 0 || k->shift > 62 || k->mask < 0 || k->mask >= (1 << ZS_GROUPS)
        || k->wsize <= 0 || k->zwords <= 0 || k->hdr < 0) {
        PyErr_SetString(PyExc_ValueError, "zsmalloc: class state out of range");
        return -1;
    }
    if ((k->inuse = attr_list(c, s_inuse)) == NULL || (k->freeobj = attr_list(c, s_freeobj)) == NULL
        || (k->fg = attr_list(c, s_fg)) == NULL || (k->groups = attr_list(c, s_groups)) == NULL
        || (k->bvs = attr_list(c, s_bvs)) == NULL || (k->hbase = attr_list(c, s_hbase)) == NULL
        || (k->howner = attr_list(c, s_howner)) == NULL) {
        zs_class_release(k);
        return -1;
    }
    if (PyList_GET_SIZE(k->groups) != ZS_GROUPS) {
        PyErr_SetString(PyExc_ValueError, "zsmalloc: class has no 12 fullness groups");
        zs_class_release(k);
        return -1;
    }
    return 0;
}

/* The class's mask and used counters back into its attributes. */
static int
zs_class_store_counts(PyObject *c, const ZsClass *k)
{
    PyObject *mv = PyLong_FromSsize_t(k->mask), *uv = PyLong_FromSsize_t(k->used);
    int rc = mv == NULL || uv == NULL || PyObject_SetAttr(c, s_mask, mv) < 0
                     || PyObject_SetAttr(c, s_used, uv) < 0
                 ? -1
                 : 0;
    Py_XDECREF(mv);
    Py_XDECREF(uv);
    return rc;
}

/* dict[key] = None (put) or del dict[key], with an int key. */
static int
dict_key(PyObject *d, Py_ssize_t key, int put)
{
    PyObject *o = PyLong_FromSsize_t(key);
    if (o == NULL)
        return -1;
    int rc = put ? PyDict_SetItem(d, o, Py_None) : PyDict_DelItem(d, o);
    Py_DECREF(o);
    return rc;
}
#define dict_put(d, key) dict_key((d), (key), 1)
#define dict_del(d, key) dict_key((d), (key), 0)

/* A writable byte buffer of list[k] (a segment's view). */
static int
list_buffer(PyObject *list, Py_ssize_t k, Py_buffer *b)
{
    if (k < 0 || k >= PyList_GET_SIZE(list)) {
        PyErr_Format(PyExc_IndexError, "zsmalloc: segment %zd out of range", k);
        return -1;
    }
    return PyObject_GetBuffer(PyList_GET_ITEM(list, k), b, PyBUF_WRITABLE);
}

/*
 * ZsPool.store(data, owner) with the size's class `c` (pool._by_size[size])
 * already looked up and size in 1..PAGE_SIZE, owner < 2**63: the object's
 * handle into *out.  -1 with an exception when ZsPool._alloc_zspage raises
 * (ENOMEM: nothing changed then) or the pool's state is broken.
 */
static int
zs_store_obj(PyObject *pool, PyObject *c, const char *data, Py_ssize_t size,
             unsigned long long owner, unsigned long long *out)
{
    ZsClass k;
    Py_ssize_t mask, g, s, n, w, si, ng;
    PyObject *d, *groups = NULL;
    Py_buffer bv;
    int rc = -1;

    if (attr_ssize(c, s_mask, &mask) < 0 || (groups = attr_list(c, s_groups)) == NULL)
        goto out_groups;
    if (mask < 0 || mask >= (1 << ZS_GROUPS) || PyList_GET_SIZE(groups) != ZS_GROUPS) {
        PyErr_SetString(PyExc_ValueError, "zsmalloc: class state out of range");
        goto out_groups;
    }
    if (mask) {
        /* find_get_zspage(): first entry of the fullest non-full group. */
        g = 63 - __builtin_clzll((unsigned long long)mask);
        d = PyList_GET_ITEM(groups, g);
        PyObject *item = PyObject_CallMethodNoArgs(d, s_popitem);
        if (item == NULL)
            goto out_groups;
        s = PyLong_AsSsize_t(PyTuple_Check(item) && PyTuple_GET_SIZE(item) == 2
                                 ? PyTuple_GET_ITEM(item, 0) : item);
        Py_DECREF(item);
    }
    else {
        /* May grow the class's lists: everything else is loaded after it. */
        PyObject *so = PyObject_CallMethodOneArg(pool, s_alloc_zspage, c);
        if (so == NULL)
            goto out_groups;
        s = PyLong_AsSsize_t(so);
        Py_DECREF(so);
        g = 0;
        d = PyList_GET_ITEM(groups, 0);
    }
    if (s == -1 && PyErr_Occurred())
        goto out_groups;
    if (zs_class_load(c, &k) < 0)
        goto out_groups;
    if (list_ssize(k.inuse, s, &n) < 0 || list_ssize(k.freeobj, s, &w) < 0)
        goto out;
    n += 1;
    if (list_set_ssize(k.inuse, s, n) < 0)
        goto out;
    si = s >> k.shift;
    if (list_buffer(k.bvs, si, &bv) < 0)
        goto out;
    Py_ssize_t hoff = w * 8, o = hoff + k.hdr;
    if (w < 0 || hoff > bv.len - 8 || o > bv.len - size) {
        PyErr_Format(PyExc_ValueError, "zsmalloc: object at word %zd does not fit", w);
        PyBuffer_Release(&bv);
        goto out;
    }
    if (k.huge) {
        PyObject *ov = PyLong_FromUnsignedLongLong(owner);
        if (ov == NULL || PyList_SetItem(k.howner, s, ov) < 0) { /* steals ov */
            PyBuffer_Release(&bv);
            goto out;
        }
    }
    else {
        /* obj_malloc(): pop the zspage's free list, stamp the header. */
        uint64_t link, tag = (owner << 1) | 1;
        char *base = bv.buf;
        memcpy(&link, base + hoff, 8);
        /* A zero header is the untouched tail of init_zspage()'s chain. */
        if (list_set_ssize(k.freeobj, s, link ? (Py_ssize_t)(link >> 1) - 1 : w + k.wsize) < 0) {
            PyBuffer_Release(&bv);
            goto out;
        }
        memcpy(base + hoff, &tag, 8);
    }
    memcpy((char *)bv.buf + o, data, (size_t)size);
    PyBuffer_Release(&bv);
    k.used += 1;
    /* fix_fullness_group() */
    if (list_ssize(k.fg, n, &ng) < 0)
        goto out;
    if (ng == g) {
        if (dict_put(d, s) < 0) /* popped from the tail, back to the tail */
            goto out;
    }
    else {
        if (g) {
            Py_ssize_t left = PyDict_Size(d);
            if (left < 0)
                goto out;
            if (!left)
                mask ^= (Py_ssize_t)1 << g;
        }
        if (ng != ZS_RATIO_100) {
            if (ng < 0 || ng >= ZS_GROUPS) {
                PyErr_Format(PyExc_ValueError, "zsmalloc: group %zd missing", ng);
                goto out;
            }
            if (dict_put(PyList_GET_ITEM(k.groups, ng), s) < 0)
                goto out;
            mask |= (Py_ssize_t)1 << ng;
        }
    }
    k.mask = mask;
    if (zs_class_store_counts(c, &k) < 0)
        goto out;
    if (si >= PyList_GET_SIZE(k.hbase)) {
        PyErr_SetString(PyExc_IndexError, "zsmalloc: hbase too short");
        goto out;
    }
    {
        unsigned long long hb = PyLong_AsUnsignedLongLong(PyList_GET_ITEM(k.hbase, si));
        if (hb == (unsigned long long)-1 && PyErr_Occurred())
            goto out;
        *out = hb + ((unsigned long long)w << 4);
    }
    rc = 0;
out:
    zs_class_release(&k);
out_groups:
    Py_XDECREF(groups);
    return rc;
}

/*
 * ZsPool.free(handle), or with check_only its validation alone (the same
 * ValueError for an invalid or stale handle, nothing changed): 0, or -1 with
 * an exception.
 */
static int
zs_free_obj(PyObject *pool, unsigned long long handle, int check_only)
{
    ZsClass k = {0};
    PyObject *seg_info = NULL, *q;
    Py_ssize_t slot0, w, s, n, g, ng, fo;
    Py_buffer qb;
    int rc = -1, have_q = 0;
    unsigned long long seg = handle >> ZS_H_SEG_SHIFT;

    if ((seg_info = attr_list(pool, s_seg_info)) == NULL)
        return -1;
    if (seg >= (unsigned long long)PyList_GET_SIZE(seg_info)) {
        PyErr_Format(PyExc_ValueError, "invalid handle %#llx", handle);
        Py_DECREF(seg_info);
        return -1;
    }
    PyObject *info = PyList_GET_ITEM(seg_info, (Py_ssize_t)seg);
    if (!PyTuple_Check(info) || PyTuple_GET_SIZE(info) != 3) {
        PyErr_SetString(PyExc_TypeError, "zsmalloc: segment info must be a 3-tuple");
        Py_DECREF(seg_info);
        return -1;
    }
    PyObject *c = PyTuple_GET_ITEM(info, 0);
    Py_INCREF(info);
    Py_DECREF(seg_info);
    q = PyTuple_GET_ITEM(info, 2);
    slot0 = PyLong_AsSsize_t(PyTuple_GET_ITEM(info, 1));
    if ((slot0 == -1 && PyErr_Occurred()) || zs_class_load(c, &k) < 0)
        goto out;
    w = (Py_ssize_t)((handle >> 4) & ZS_H_WORD_MASK) - k.whdr;
    if (w < 0) { /* below the segment's first header: not ours */
        PyErr_Format(PyExc_ValueError, "invalid or stale handle %#llx", handle);
        goto out;
    }
    s = slot0 + w / k.zwords;
    if (list_ssize(k.inuse, s, &n) < 0)
        goto out;
    if (PyObject_GetBuffer(q, &qb, PyBUF_WRITABLE) < 0)
        goto out;
    have_q = 1;
    if (k.huge) {
        if (!n || (handle & 15) != 1 || w % k.zwords) {
            PyErr_Format(PyExc_ValueError, "invalid or stale handle %#llx", handle);
            goto out;
        }
    }
    else {
        uint64_t word = 0;
        if (w < qb.len / 8)
            memcpy(&word, (char *)qb.buf + w * 8, 8);
        if (!(word & 1) || (handle & 15) != 1) {
            PyErr_Format(PyExc_ValueError, "invalid or stale handle %#llx", handle);
            goto out;
        }
    }
    if (check_only) {
        rc = 0;
        goto out;
    }
    k.used -= 1;
    if (list_ssize(k.fg, n, &g) < 0)
        goto out;
    n -= 1;
    if (g < 0 || g >= ZS_GROUPS) {
        PyErr_Format(PyExc_ValueError, "zsmalloc: group %zd missing", g);
        goto out;
    }
    if (!n) {
        /* fix_fullness_group() -> ZS_INUSE_RATIO_0 -> free_zspage() */
        if (g != ZS_RATIO_100) {
            PyObject *d = PyList_GET_ITEM(k.groups, g);
            if (dict_del(d, s) < 0)
                goto out;
            Py_ssize_t left = PyDict_Size(d);
            if (left < 0)
                goto out;
            if (!left)
                k.mask ^= (Py_ssize_t)1 << g;
        }
        if (list_set_ssize(k.inuse, s, 0) < 0 || zs_class_store_counts(c, &k) < 0)
            goto out;
        /* _free_zspage may unmap the segment: its view must not be exported. */
        PyBuffer_Release(&qb);
        have_q = 0;
        PyObject *so = PyLong_FromSsize_t(s);
        PyObject *r = so == NULL ? NULL : PyObject_CallMethodObjArgs(pool, s_free_zspage, c, so, NULL);
        Py_XDECREF(so);
        if (r == NULL)
            goto out;
        Py_DECREF(r);
        rc = 0;
        goto out;
    }
    if (list_set_ssize(k.inuse, s, n) < 0 || list_ssize(k.freeobj, s, &fo) < 0)
        goto out;
    /* obj_free(): push onto the zspage's free list (tag bit clear). */
    {
        uint64_t link = (uint64_t)(fo + 1) << 1;
        memcpy((char *)qb.buf + w * 8, &link, 8);
    }
    if (list_set_ssize(k.freeobj, s, w) < 0 || list_ssize(k.fg, n, &ng) < 0)
        goto out;
    if (ng != g) {
        if (ng < 0 || ng >= ZS_GROUPS) {
            PyErr_Format(PyExc_ValueError, "zsmalloc: group %zd missing", ng);
            goto out;
        }
        if (g != ZS_RATIO_100) {
            PyObject *d = PyList_GET_ITEM(k.groups, g);
            if (dict_del(d, s) < 0)
                goto out;
            Py_ssize_t left = PyDict_Size(d);
            if (left < 0)
                goto out;
            if (!left)
                k.mask ^= (Py_ssize_t)1 << g;
        }
        if (dict_put(PyList_GET_ITEM(k.groups, ng), s) < 0)
            goto out;
        k.mask |= (Py_ssize_t)1 << ng;
    }
    rc = zs_class_store_counts(c, &k);
out:
    if (have_q)
        PyBuffer_Release(&qb);
    zs_class_release(&k);
    Py_DECREF(info);
    return rc;
}

/* pool._by_size[size]: the class object (borrowed from the list), or NULL. */
static PyObject *
zs_class_of(PyObject *pool, Py_ssize_t size, PyObject **by_size_out)
{
    PyObject *by_size = attr_list(pool, s_by_size);
    if (by_size == NULL)
        return NULL;
    if (size < 1 || size >= PyList_GET_SIZE(by_size) || size > PAGE) {
        PyErr_Format(PyExc_ValueError, "zsmalloc: size %zd out of 1..%d", size, PAGE);
        Py_DECREF(by_size);
        return NULL;
    }
    *by_size_out = by_size;
    return PyList_GET_ITEM(by_size, size);
}

PyDoc_STRVAR(zs_store_doc,
"zs_store($module, pool, data, owner, /)\n"
"--\n"
"\n"
"Returns int.\n"
"\n"
"ZsPool.store(data, owner) in C, on the pool's Python state (the same\n"
"zspage, object and fullness-list order as the Python method): the new\n"
"object's handle.  For a length outside 1..PAGE_SIZE or an owner outside\n"
"0..2**63-1 it raises what pool._bad_malloc raises; when a new zspage\n"
"fails, what ZsPool._alloc_zspage raises (ZramError ENOMEM).  Either way\n"
"nothing is changed.");

static PyObject *
zs_store(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer b;
    PyObject *by_size = NULL, *c, *out = NULL;
    unsigned long long owner, h;
    int owner_ok = 0;

    if (!nargs_ok("zs_store", nargs, 3) || intern_names() < 0)
        return NULL;
    owner = PyLong_AsUnsignedLongLong(args[2]);
    if (owner == (unsigned long long)-1 && PyErr_Occurred())
        PyErr_Clear(); /* negative, or 2**64 and up: _bad_malloc says which */
    else if (!(owner >> 63))
        owner_ok = 1;
    if (PyObject_GetBuffer(args[1], &b, PyBUF_SIMPLE) < 0)
        return NULL;
    if (b.len < 1 || b.len > PAGE || !owner_ok) {
        /* ZsPool._bad_malloc raises the pool's error (ZramError EINVAL /
         * ENOSPC for the size, ValueError for the owner). */
        PyObject *size = PyLong_FromSsize_t(b.len);
        PyBuffer_Release(&b);
        if (size == NULL)
            return NULL;
        PyObject *r = PyObject_CallMethodObjArgs(args[0], s_bad_malloc, size, args[2], NULL);
        Py_DECREF(size);
        Py_XDECREF(r);
        if (r != NULL)
            PyErr_SetString(PyExc_ValueError, "zs_store: bad size or owner");
        return NULL;
    }
    c = zs_class_of(args[0], b.len, &by_size);
    if (c != NULL && zs_store_obj(args[0], c, b.buf, b.len, owner, &h) == 0)
        out = PyLong_FromUnsignedLongLong(h);
    Py_XDECREF(by_size);
    PyBuffer_Release(&b);
    return out;
}

PyDoc_STRVAR(zs_free_doc,
"zs_free($module, pool, handle, /)\n"
"--\n"
"\n"
"ZsPool.free(handle) in C, on the pool's Python state: ValueError, nothing\n"
"changed, for an invalid or stale handle.");

static PyObject *
zs_free(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs)
{
    if (!nargs_ok("zs_free", nargs, 2) || intern_names() < 0)
        return NULL;
    unsigned long long h = PyLong_AsUnsignedLongLong(args[1]);
    if (h == (unsigned long long)-1 && PyErr_Occurred()) {
        if (PyErr_ExceptionMatches(PyExc_OverflowError)) {
            PyErr_Clear();
            PyErr_SetString(PyExc_ValueError, "invalid handle");
        }
        return NULL;
    }
    if (zs_free_obj(args[0], h, 0) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* ------------------------------------------------------ the write fast path */

/*
 * A 4 KiB write served in the pyfuse3 request handler
 * (Operations.write_nowait): ZramDevice.write_nowait + _store_run for one
 * page, in C against the same Python objects, for the common case only: an
 * image page whose slot is unlocked and holds nothing or a page in RAM, a
 * page that is not same-filled, the accelerated lz4 at its default
 * acceleration, no writer at the device lock, and a store that mem_limit
 * allows.  Anything else goes to `fallback` (the Python write_nowait) before
 * anything is changed.  A served write leaves exactly what the Python path
 * leaves: the object stored (zs_store_obj), the old one freed, the slot
 * words, ac_time (the device's _actime too), mm_stat's counters, the block
 * statistics and one more grant in the device lock's stats.
 */

static PyObject *
write_nowait(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *cfg, *handles, *devices, *fallback;
    ImageDev d = {0};
    PyObject *dev, *pool, *comps = NULL, *fn = NULL, *clock = NULL, *t = NULL, *attr = NULL,
                          *handle = NULL, *by_size = NULL, *out = NULL, *st = NULL, *v = NULL;
    unsigned long long busy, rmask, lock_mask, special, size_mask, huge_flag;
    long shift;
    Py_ssize_t off, disksize, idx, limit, huge_size;
    Py_buffer src = {0}, ab = {0}, hb = {0};
    int have_src = 0, have_ab = 0, have_hb = 0;
    uint8_t dst[KZ_BOUND(PAGE)];
    uint16_t kztable[1 << KZ_HASHLOG];

    if (!nargs_ok("write_nowait", nargs, 4) || intern_names() < 0)
        return NULL;
    cfg = args[0];
    if (!PyTuple_Check(cfg) || PyTuple_GET_SIZE(cfg) != 10) {
        PyErr_SetString(PyExc_TypeError, "write_nowait: cfg must be a tuple of 10");
        return NULL;
    }
    /* cfg: (handles, devices, fallback, lock_busy, reader_mask, actime_shift,
     *       lock_mask, special, size_mask, huge_flag) */
    handles = PyTuple_GET_ITEM(cfg, 0);
    devices = PyTuple_GET_ITEM(cfg, 1);
    fallback = PyTuple_GET_ITEM(cfg, 2);
    busy = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(cfg, 3));
    rmask = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(cfg, 4));
    shift = PyLong_AsLong(PyTuple_GET_ITEM(cfg, 5));
    lock_mask = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(cfg, 6));
    special = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(cfg, 7));
    size_mask = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(cfg, 8));
    huge_flag = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(cfg, 9));
    if (PyErr_Occurred() || shift < 0 || shift > 63)
        return NULL;

    /* Everything that decides "not here" first, changing nothing. */
    if (image_dev(handles, devices, args[1], busy, rmask, &d) < 0)
        goto decline;
    dev = d.dev;
    pool = d.pool;
    if (PyObject_GetBuffer(args[3], &src, PyBUF_SIMPLE) < 0)
        goto decline;
    have_src = 1;
    off = PyLong_AsSsize_t(args[2]);
    if (PyErr_Occurred() || src.len != PAGE || off < 0 || off % PAGE)
        goto decline;
    if (attr_ssize(dev, s_disksize, &disksize) < 0 || off >= disksize)
        goto decline;
    comps = attr_list(dev, s_comps);
    if (comps == NULL || PyList_GET_SIZE(comps) < 1)
        goto decline;
    fn = get(PyList_GET_ITEM(comps, 0), s_compress);
    if (fn == NULL || !PyCFunction_Check(fn)
        || PyCFunction_GET_FUNCTION(fn) != (PyCFunction)(void (*)(void))lz4_compress_page)
        goto decline; /* another codec, or lz4 at another acceleration */
    attr = get(d.table, s_attr);
    handle = get(d.table, s_handle);
    if (attr == NULL || handle == NULL || PyObject_GetBuffer(attr, &ab, PyBUF_WRITABLE) < 0)
        goto decline;
    have_ab = 1;
    if (PyObject_GetBuffer(handle, &hb, PyBUF_WRITABLE) < 0)
        goto decline;
    have_hb = 1;
    idx = off / PAGE;
    if ((idx + 1) * 8 > ab.len || (idx + 1) * 8 > hb.len)
        goto decline;
    uint64_t a, old = 0;
    memcpy(&a, (char *)ab.buf + idx * 8, 8);
    if ((a & lock_mask) || (a & special)) /* queued for, or same-filled / written back */
        goto decline;
    if (a & size_mask) {
        memcpy(&old, (char *)hb.buf + idx * 8, 8);
        if (zs_free_obj(pool, old, 1) < 0) /* what the Python path would raise: let it */
            goto decline;
    }
    if (same_filled(src.buf))
        goto decline;
    if (attr_ssize(dev, s_limit_pages, &limit) < 0
        || attr_ssize(dev, s_huge_class_size, &huge_size) < 0)
        goto decline;
    clock = get(dev, s_clock);
    t = clock == NULL ? NULL : PyObject_CallNoArgs(clock);
    if (t == NULL)
        goto decline;
    unsigned long long secs = PyLong_AsUnsignedLongLong(t);
    if (PyErr_Occurred())
        goto decline;
    uint64_t actime = (uint64_t)secs << shift;

    long long t0 = mono_ns();
    Py_ssize_t n = (Py_ssize_t)kz_compress(src.buf, PAGE, dst, 1, kztable);
    const char *obj = (const char *)dst;
    int huge = n >= huge_size;
    if (huge) { /* zram_write_page(): stored raw */
        obj = src.buf;
        n = PAGE;
    }
    PyObject *c = zs_class_of(pool, n, &by_size);
    if (c == NULL)
        goto decline;
    if (limit) {
        /* Pages only grow in _alloc_zspage, which the store calls exactly
         * when the class has no partial zspage: the Python path's
         * "total_pages() > limit" after the store, known before it. */
        Py_ssize_t pages, mask, ppz;
        if (attr_ssize(pool, s_pages, &pages) < 0 || attr_ssize(c, s_mask, &mask) < 0
            || attr_ssize(c, s_ppz, &ppz) < 0)
            goto decline;
        if (pages + (mask ? 0 : ppz) > limit)
            goto decline; /* the Python path refuses it (EIO) */
    }
    unsigned long long hnew;
    if (zs_store_obj(pool, c, obj, n, (unsigned long long)idx, &hnew) < 0)
        goto decline; /* ENOMEM from the arena, nothing changed: let Python raise it */

    /* Stored: from here the write happens, as _store_run's. */
    Py_ssize_t stored = 1, compr = n, nhuge = huge, unhuge = 0, pages;
    v = PyLong_FromUnsignedLongLong(actime);
    if (v == NULL || PyObject_SetAttr(dev, s_actime, v) < 0)
        goto error;
    Py_CLEAR(v);
    /* mem_used_max: pages only grew in that store. */
    if (attr_ssize(pool, s_pages, &pages) < 0)
        goto error;
    v = PyLong_FromSsize_t(pages);
    if (v == NULL || PyObject_SetAttr(pool, s_peak_pages, v) < 0)
        goto error;
    Py_CLEAR(v);
    if (a & size_mask) {
        if (zs_free_obj(pool, old, 0) < 0)
            goto error;
        compr -= (Py_ssize_t)(a & size_mask);
        stored -= 1;
        if (a & huge_flag)
            unhuge = 1;
    }
    memcpy((char *)hb.buf + idx * 8, &hnew, 8);
    {
        uint64_t na = (uint64_t)n | (huge ? huge_flag : 0) | actime;
        memcpy((char *)ab.buf + idx * 8, &na, 8);
    }
    st = get(dev, s_stats);
    if (st == NULL)
        goto error;
    if ((stored && attr_add(st, s_pages_stored, stored) < 0)
        || (compr && attr_add(st, s_compr_data_size, compr) < 0)
        || ((nhuge || unhuge) && attr_add(st, s_huge_pages, nhuge - unhuge) < 0)
        || (nhuge && attr_add(st, s_huge_pages_since, nhuge) < 0))
        goto error;
    {
        Py_ssize_t mx;
        if (attr_ssize(st, s_max_used_pages, &mx) < 0)
            goto error;
        if (pages > mx) {
            v = PyLong_FromSsize_t(pages);
            if (v == NULL || PyObject_SetAttr(st, s_max_used_pages, v) < 0)
                goto error;
            Py_CLEAR(v);
        }
    }
    /* DevLock.try_read()'s grant, BlockStat.start + write_done. */
    if (count_request(dev, d.dl, t0, mono_ns(), PAGE, 1) < 0)
        goto error;
    out = PyLong_FromLong(PAGE);
    goto done;

decline:
    PyErr_Clear();
    if (have_src) {
        PyBuffer_Release(&src);
        have_src = 0;
    }
    if (have_ab) {
        PyBuffer_Release(&ab);
        have_ab = 0;
    }
    if (have_hb) {
        PyBuffer_Release(&hb);
        have_hb = 0;
    }
    out = PyObject_Vectorcall(fallback, args + 1, 3, NULL);
    goto done;
error:
    /* Only a broken pool or table, or no memory for an int, gets here. */
    out = NULL;
done:
    if (have_src)
        PyBuffer_Release(&src);
    if (have_ab)
        PyBuffer_Release(&ab);
    if (have_hb)
        PyBuffer_Release(&hb);
    image_dev_release(&d);
    Py_XDECREF(comps);
    Py_XDECREF(fn);
    Py_XDECREF(clock);
    Py_XDECREF(t);
    Py_XDECREF(attr);
    Py_XDECREF(handle);
    Py_XDECREF(by_size);
    Py_XDECREF(st);
    Py_XDECREF(v);
    return out;
}

PyDoc_STRVAR(write_nowait_doc,
"write_nowait($module, cfg, fh, off, buf, /)\n"
"--\n"
"\n"
"Returns int, or what cfg's fallback returns.\n"
"\n"
"pyfuse3's Operations.write_nowait for zramfs (bound with functools.partial\n"
"to cfg = (handles, devices, fallback, lock_busy, reader_mask, actime_shift,\n"
"lock_mask, special, size_mask, huge_flag)): one whole page of an image\n"
"file, written as ZramDevice.write_nowait writes it, when its slot is\n"
"unlocked and holds nothing or a page in RAM, the page is not same-filled,\n"
"the primary codec is the accelerated lz4 at its default acceleration, no\n"
"writer is at the device lock and mem_limit allows the store.  Anything\n"
"else is fallback(fh, off, buf) (the Python write_nowait), called before\n"
"anything is changed.  See the comment above it in _zpages.c.");

/* ------------------------------------------------------------------- module */

static PyMethodDef zpages_methods[] = {
    {"lz4_compress_pages", (PyCFunction)(void (*)(void))lz4_compress_pages, METH_FASTCALL,
     lz4_compress_pages_doc},
    {"lz4hc_compress_pages", (PyCFunction)(void (*)(void))lz4hc_compress_pages, METH_FASTCALL,
     lz4hc_compress_pages_doc},
    {"lz4_compress_begin", (PyCFunction)(void (*)(void))lz4_compress_begin, METH_FASTCALL,
     lz4_compress_begin_doc},
#ifdef ZRAMFS_ZSTD
    {"zstd_compress_pages", (PyCFunction)(void (*)(void))zstd_compress_pages, METH_FASTCALL,
     zstd_compress_pages_doc},
    {"zstd_compress_begin", (PyCFunction)(void (*)(void))zstd_compress_begin, METH_FASTCALL,
     zstd_compress_begin_doc},
    {"zstd_decompress_pages", (PyCFunction)(void (*)(void))zstd_decompress_pages, METH_FASTCALL,
     zstd_decompress_pages_doc},
    {"zstd_read_slots", (PyCFunction)(void (*)(void))zstd_read_slots, METH_FASTCALL,
     zstd_read_slots_doc},
#endif
    {"lz4_decompress_pages", (PyCFunction)(void (*)(void))lz4_decompress_pages, METH_FASTCALL,
     lz4_decompress_pages_doc},
    {"lz4_decompress_gather", (PyCFunction)(void (*)(void))lz4_decompress_gather, METH_FASTCALL,
     lz4_decompress_gather_doc},
    {"lz4_read_slots", (PyCFunction)(void (*)(void))lz4_read_slots, METH_FASTCALL,
     lz4_read_slots_doc},
    {"zs_fill", (PyCFunction)(void (*)(void))zs_fill, METH_FASTCALL, zs_fill_doc},
    {"zs_store_batch", (PyCFunction)(void (*)(void))zs_store_batch, METH_FASTCALL,
     zs_store_batch_doc},
    {"zs_alloc_zspages", (PyCFunction)(void (*)(void))zs_alloc_zspages, METH_FASTCALL,
     zs_alloc_zspages_doc},
    {"lz4_decompress_page", (PyCFunction)(void (*)(void))lz4_decompress_page, METH_FASTCALL,
     lz4_decompress_page_doc},
    {"lz4_compress_page", (PyCFunction)(void (*)(void))lz4_compress_page, METH_FASTCALL,
     lz4_compress_page_doc},
    {"read_nowait", (PyCFunction)(void (*)(void))read_nowait, METH_FASTCALL, read_nowait_doc},
    {"write_nowait", (PyCFunction)(void (*)(void))write_nowait, METH_FASTCALL, write_nowait_doc},
    {"zs_store", (PyCFunction)(void (*)(void))zs_store, METH_FASTCALL, zs_store_doc},
    {"zs_free", (PyCFunction)(void (*)(void))zs_free, METH_FASTCALL, zs_free_doc},
    {"boottime_seconds", boottime_seconds, METH_NOARGS, boottime_seconds_doc},
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(zpages_doc,
"Batch LZ4 / LZ4HC / zstd page loops for zramfs, in C against the system liblz4\n"
"and, when built with it, the zstd release python-zstandard bundles (ZSTD_VERSION).\n"
"\n"
"Pages are 4096 bytes (PAGE_SIZE).  Batch calls (lz4_compress_pages,\n"
"lz4hc_compress_pages, lz4_decompress_pages) handle a whole request in one\n"
"call, release the GIL for the whole loop and split it over up to 8\n"
"threads, so no Python runs per page and both CPUs can work on one request.\n"
"Single-page calls (lz4_compress_page, lz4_decompress_page) keep the GIL,\n"
"because releasing and reacquiring it costs more than the ~5 us of work.\n"
"\n"
"LZ4 fast-mode blocks are the kernel's (its LZ4_compress_fast's parse of a\n"
"page, implemented here); LZ4HC blocks are byte-identical to python-lz4's\n"
"lz4.block.compress (store_size=False) with the same LZ4 version\n"
"(LZ4_VERSION, the linked library's LZ4_versionString()).  Any LZ4 decoder\n"
"reads both.  Calls are independent and thread-safe;\n"
"the only global state is a pool of parked helper threads that batch calls\n"
"hand their chunks to, one caller at a time (others start their own).");

static struct PyModuleDef zpages_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "zramfs._zpages",
    .m_doc = zpages_doc,
    .m_size = 0,
    .m_methods = zpages_methods,
};

PyMODINIT_FUNC
PyInit__zpages(void)
{
    if (intern_names() < 0 || PyType_Ready(&PendingType) < 0)
        return NULL;
#ifdef ZRAMFS_ZSTD
    static int zstd_key_made;
    if (!zstd_key_made) {
        int err = pthread_key_create(&zstd_key, zstd_key_free);
        if (err != 0) {
            errno = err;
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        zstd_key_made = 1;
    }
#endif
    PyObject *m = PyModule_Create(&zpages_module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddIntConstant(m, "PAGE_SIZE", PAGE) < 0
        || PyModule_AddStringConstant(m, "LZ4_VERSION", LZ4_versionString()) < 0
        || PyModule_AddIntConstant(m, "HANDLE_SEG_SHIFT", ZS_H_SEG_SHIFT) < 0
        || PyModule_AddIntConstant(m, "HANDLE_OFF_MASK", (long)ZS_H_OFF_MASK) < 0
        || PyModule_AddObjectRef(m, "Pending", (PyObject *)&PendingType) < 0
#ifdef ZRAMFS_ZSTD
        /* What the zstd_* calls compress with; the codec uses them only if
         * this is python-zstandard's ZSTD_VERSION too. */
        || PyModule_AddStringConstant(m, "ZSTD_VERSION", ZSTD_versionString()) < 0
#endif
        ) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
