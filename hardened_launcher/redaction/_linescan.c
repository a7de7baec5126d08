/* Wrap-break triggers of the redaction engine, found without Hyperscan (optional speed-up).
 *
 * A trigger is an LF that follows WRAP_MIN_WIDTH characters of the base64 alphabets, directly
 * or with one CR in between (engine.WRAP_TRIGGER). Hyperscan finds it with two expressions
 * beside the literals, at ~20 us per 64 KiB; here memchr finds each LF and a table tests the
 * bytes before it, stopping at the first byte outside the alphabet (most lines end in one).
 *
 * The functions only read their arguments (the buffer protocol, released before returning);
 * every index is checked against the buffer's bounds before it is read. engine.py checks
 * WRAP_ALPHABET and WRAP_MIN_WIDTH below against its own definitions before using the module,
 * and the property tests compare both functions with the regular-expression definition.
 */
#define Py_LIMITED_API 0x030B0000
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define WRAP_MIN_WIDTH 16
static const char WRAP_ALPHABET[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/_-";

static unsigned char is_wrap[256];

#if defined(__SSE2__)
#include <emmintrin.h>
#define HAVE_SSE2 1

/* Whether the 16 bytes at p are all wrap characters, in one compare per class; checked against
 * is_wrap for every byte value when the module loads. */
static inline int
all_wrap16(const unsigned char *p)
{
    const __m128i v = _mm_loadu_si128((const __m128i *)p);
    /* OR 0x20 maps A-Z onto a-z and no other byte into a-z; bytes >= 0x80 are negative in
     * the signed compares, so they fail every range. */
    const __m128i low = _mm_or_si128(v, _mm_set1_epi8(0x20));
    const __m128i letter = _mm_and_si128(_mm_cmpgt_epi8(low, _mm_set1_epi8('a' - 1)),
                                         _mm_cmplt_epi8(low, _mm_set1_epi8('z' + 1)));
    const __m128i digit = _mm_and_si128(_mm_cmpgt_epi8(v, _mm_set1_epi8('0' - 1)),
                                        _mm_cmplt_epi8(v, _mm_set1_epi8('9' + 1)));
    const __m128i sign = _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('+')),
                                      _mm_cmpeq_epi8(v, _mm_set1_epi8('/')));
    const __m128i dash = _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('_')),
                                      _mm_cmpeq_epi8(v, _mm_set1_epi8('-')));
    const __m128i ok = _mm_or_si128(_mm_or_si128(letter, digit), _mm_or_si128(sign, dash));
    return _mm_movemask_epi8(ok) == 0xFFFF;
}
#else
#define HAVE_SSE2 0
#endif

/* Whether the WRAP_MIN_WIDTH bytes before data[end] are all wrap characters; bytes before
 * data[0] are read from the end of behind (which may be empty). */
static int
run_before(const unsigned char *data, Py_ssize_t end, const unsigned char *behind,
           Py_ssize_t behind_len)
{
#if HAVE_SSE2
    if (end >= 16)
        return all_wrap16(data + end - 16);
#endif
    Py_ssize_t need = WRAP_MIN_WIDTH;
    Py_ssize_t i = end - 1;
    while (need > 0 && i >= 0) {
        if (!is_wrap[data[i]])
            return 0;
        i--;
        need--;
    }
    i = behind_len - 1;
    while (need > 0 && i >= 0) {
        if (!is_wrap[behind[i]])
            return 0;
        i--;
        need--;
    }
    return need == 0;
}

/* The LF positions of data[from:to], in order: 16 bytes per compare, then memchr. */
typedef struct {
    const unsigned char *data;
    Py_ssize_t pos;
    Py_ssize_t to;
    Py_ssize_t base;
    unsigned int mask;
} lf_iter;

static inline Py_ssize_t
next_lf(lf_iter *it)
{
#if HAVE_SSE2
    for (;;) {
        if (it->mask) {
            unsigned int bit = (unsigned int)__builtin_ctz(it->mask);
            it->mask &= it->mask - 1;
            return it->base + (Py_ssize_t)bit;
        }
        if (it->to - it->pos < 16)
            break;
        const __m128i v = _mm_loadu_si128((const __m128i *)(it->data + it->pos));
        it->mask = (unsigned int)_mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8('\n')));
        it->base = it->pos;
        it->pos += 16;
    }
#endif
    if (it->pos < it->to) {
        const unsigned char *hit = memchr(it->data + it->pos, '\n', (size_t)(it->to - it->pos));
        if (hit != NULL) {
            it->pos = (hit - it->data) + 1;
            return it->pos - 1;
        }
        it->pos = it->to;
    }
    return -1;
}

static int
get_buffer(PyObject *obj, Py_buffer *view, const char *what)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_SIMPLE) < 0) {
        PyErr_Format(PyExc_TypeError, "%s must be a bytes-like object", what);
        return -1;
    }
    return 0;
}

static int
append_int(PyObject *list, Py_ssize_t value)
{
    PyObject *item = PyLong_FromSsize_t(value);
    if (item == NULL)
        return -1;
    int rc = PyList_Append(list, item);
    Py_DECREF(item);
    return rc;
}

PyDoc_STRVAR(wrap_newlines_doc,
"wrap_newlines(data, skip, /)\n--\n\n"
"Positions >= skip of the LF bytes in data that follow WRAP_MIN_WIDTH wrap characters,\n"
"directly or with one CR in between (engine.wrap_newlines).");

static PyObject *
wrap_newlines(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "wrap_newlines() takes exactly 2 arguments");
        return NULL;
    }
    Py_ssize_t skip = PyLong_AsSsize_t(args[1]);
    if (skip == -1 && PyErr_Occurred())
        return NULL;
    Py_buffer view;
    if (get_buffer(args[0], &view, "data") < 0)
        return NULL;
    const unsigned char *data = (const unsigned char *)view.buf;
    Py_ssize_t size = view.len;
    PyObject *out = PyList_New(0);
    if (out == NULL)
        goto fail;
    lf_iter it = {data, skip < 0 ? 0 : skip, size, 0, 0};
    Py_ssize_t nl;
    while ((nl = next_lf(&it)) >= 0) {
        Py_ssize_t end = (nl >= 1 && data[nl - 1] == '\r') ? nl - 1 : nl;
        if (run_before(data, end, NULL, 0) && append_int(out, nl) < 0)
            goto fail;
    }
    PyBuffer_Release(&view);
    return out;
fail:
    Py_XDECREF(out);
    PyBuffer_Release(&view);
    return NULL;
}

PyDoc_STRVAR(wrap_breaks_doc,
"wrap_breaks(data, behind, /)\n--\n\n"
"(start, end) of the line breaks in data that may sit inside a wrapped encoding: an LF or\n"
"CR LF after WRAP_MIN_WIDTH wrap characters (read on into behind, the text before data),\n"
"starting after data's first byte and followed by a wrap character (stream._wrap_breaks).");

static PyObject *
wrap_breaks(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "wrap_breaks() takes exactly 2 arguments");
        return NULL;
    }
    Py_buffer view, behind_view;
    if (get_buffer(args[0], &view, "data") < 0)
        return NULL;
    if (get_buffer(args[1], &behind_view, "behind") < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    const unsigned char *data = (const unsigned char *)view.buf;
    const unsigned char *behind = (const unsigned char *)behind_view.buf;
    Py_ssize_t size = view.len;
    Py_ssize_t behind_len = behind_view.len;
    PyObject *out = PyList_New(0);
    if (out == NULL)
        goto fail;
    /* An LF at 0 cannot start a break after the first byte; the last byte has no next one. */
    lf_iter it = {data, 1, size - 1, 0, 0};
    Py_ssize_t nl;
    while ((nl = next_lf(&it)) >= 0) { /* 1 <= nl <= size - 2 */
        if (!is_wrap[data[nl + 1]])
            continue;
        Py_ssize_t start = data[nl - 1] == '\r' ? nl - 1 : nl;
        if (start < 1 || !run_before(data, start, behind, behind_len))
            continue;
        PyObject *item = Py_BuildValue("(nn)", start, nl + 1);
        if (item == NULL)
            goto fail;
        int rc = PyList_Append(out, item);
        Py_DECREF(item);
        if (rc < 0)
            goto fail;
    }
    PyBuffer_Release(&behind_view);
    PyBuffer_Release(&view);
    return out;
fail:
    Py_XDECREF(out);
    PyBuffer_Release(&behind_view);
    PyBuffer_Release(&view);
    return NULL;
}

/* One copy of a stretch of the buffer into the joined text. */
typedef struct {
    Py_ssize_t from;
    Py_ssize_t to;
} piece;

static int
read_break(PyObject *item, Py_ssize_t *start, Py_ssize_t *end)
{
    if (!PyTuple_Check(item) || PyTuple_Size(item) != 2) {
        PyErr_SetString(PyExc_TypeError, "breaks must be (start, end) tuples");
        return -1;
    }
    *start = PyLong_AsSsize_t(PyTuple_GetItem(item, 0));
    if (*start == -1 && PyErr_Occurred())
        return -1;
    *end = PyLong_AsSsize_t(PyTuple_GetItem(item, 1));
    if (*end == -1 && PyErr_Occurred())
        return -1;
    return 0;
}

/* Break k of the list breaks, checked to start at or after *prev_end (then moved to its end),
 * not to end before it starts, and to lie in data of size bytes. */
static int
next_break(PyObject *breaks, Py_ssize_t k, Py_ssize_t size, Py_ssize_t *prev_end,
           Py_ssize_t *start, Py_ssize_t *end)
{
    if (read_break(PyList_GetItem(breaks, k), start, end) < 0)
        return -1;
    if (*start < *prev_end || *end < *start || *end > size) {
        PyErr_SetString(PyExc_ValueError, "breaks must be sorted, disjoint and in data");
        return -1;
    }
    *prev_end = *end;
    return 0;
}

/* The longest and span arguments (args[2] and args[3]) of the window functions. */
static int
window_sizes(PyObject *const *args, Py_ssize_t *longest, Py_ssize_t *span)
{
    *longest = PyLong_AsSsize_t(args[2]);
    if (*longest == -1 && PyErr_Occurred())
        return -1;
    *span = PyLong_AsSsize_t(args[3]);
    if (*span == -1 && PyErr_Occurred())
        return -1;
    if (*longest < 0 || *span < 0 || *longest > PY_SSIZE_T_MAX / 4 ||
        *span > PY_SSIZE_T_MAX / 4) {
        PyErr_SetString(PyExc_ValueError, "longest and span must be small non-negative ints");
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(joined_windows_doc,
"joined_windows(data, breaks, longest, span, /)\n--\n\n"
"The windows around the sorted, disjoint breaks with every break inside them removed,\n"
"concatenated: (text, segment joined starts, segment original starts, window ends in text),\n"
"as stream._joined_windows. Each break's window is [start - longest - 2, end + span).");

static PyObject *
joined_windows(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "joined_windows() takes exactly 4 arguments");
        return NULL;
    }
    PyObject *breaks = args[1];
    if (!PyList_Check(breaks)) {
        PyErr_SetString(PyExc_TypeError, "breaks must be a list");
        return NULL;
    }
    Py_ssize_t longest, span;
    if (window_sizes(args, &longest, &span) < 0)
        return NULL;
    Py_ssize_t count = PyList_Size(breaks);
    if (count < 1) {
        PyErr_SetString(PyExc_ValueError, "breaks must not be empty");
        return NULL;
    }
    Py_buffer view;
    if (get_buffer(args[0], &view, "data") < 0)
        return NULL;
    const char *data = (const char *)view.buf;
    Py_ssize_t size = view.len;
    PyObject *text = NULL, *seg_j = NULL, *seg_o = NULL, *cuts = NULL, *out = NULL;
    /* Every break adds at most two pieces (the end of the window before, the text up to it);
     * the last window's end is one more. */
    piece *pieces = PyMem_Malloc(sizeof(piece) * (size_t)(2 * count + 1));
    if (pieces == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    seg_j = PyList_New(0);
    seg_o = PyList_New(0);
    cuts = PyList_New(0);
    if (seg_j == NULL || seg_o == NULL || cuts == NULL)
        goto done;
    Py_ssize_t npieces = 0, length = 0, cursor = 0, hi = -1, prev_end = 0;
    for (Py_ssize_t k = 0; k < count; k++) {
        Py_ssize_t b_start, b_end;
        if (next_break(breaks, k, size, &prev_end, &b_start, &b_end) < 0)
            goto done;
        Py_ssize_t lo = b_start - longest - 2;
        if (lo < 0)
            lo = 0;
        if (lo > hi) { /* a new window: close the one before */
            if (hi >= 0) {
                pieces[npieces++] = (piece){cursor, hi};
                length += hi - cursor;
                if (append_int(cuts, length) < 0)
                    goto done;
            }
            if (append_int(seg_j, length) < 0 || append_int(seg_o, lo) < 0)
                goto done;
            cursor = lo;
        }
        /* cursor <= b_start: the previous break ended before this one starts, and lo <= it */
        pieces[npieces++] = (piece){cursor, b_start};
        length += b_start - cursor;
        cursor = b_end;
        if (append_int(seg_j, length) < 0 || append_int(seg_o, cursor) < 0)
            goto done;
        hi = b_end + span < size ? b_end + span : size;
    }
    pieces[npieces++] = (piece){cursor, hi};
    length += hi - cursor;
    if (append_int(cuts, length) < 0)
        goto done;
    text = PyBytes_FromStringAndSize(NULL, length);
    if (text == NULL)
        goto done;
    char *dest = PyBytes_AsString(text);
    if (dest == NULL)
        goto done;
    for (Py_ssize_t k = 0; k < npieces; k++) {
        Py_ssize_t n = pieces[k].to - pieces[k].from;
        memcpy(dest, data + pieces[k].from, (size_t)n);
        dest += n;
    }
    out = PyTuple_Pack(4, text, seg_j, seg_o, cuts);
done:
    PyMem_Free(pieces);
    Py_XDECREF(text);
    Py_XDECREF(seg_j);
    Py_XDECREF(seg_o);
    Py_XDECREF(cuts);
    PyBuffer_Release(&view);
    return out;
}

/* ---- Which breaks an occurrence can cross first ----------------------------------------
 *
 * An occurrence that crosses a break first has, around the break, 7 bytes of its pattern in
 * the text with that break removed: the 6 bytes before the break and the one after (when 6 or
 * more of its bytes come before the break), or its first 7 bytes (when k = 1 to 5 come
 * before: k before, 7 - k after). Every pattern is 7 bytes or longer (else no table), and no
 * other break lies within 16 bytes after a break, so those bytes are in the buffer as they
 * are. A Bloom filter of every 7 consecutive bytes of every pattern (two probes in one
 * 64-byte block) rules out a
 * break when none of its 6 candidates is in it; only the windows of the other breaks are
 * needed (each still drops every break inside it). */

#define GRAM 7

static inline unsigned long long
gram_hash(const unsigned char *g)
{
    /* Registers only: a 7-byte copy into a 64-bit variable goes through memory. */
    uint32_t low;
    uint16_t mid;
    memcpy(&low, g, 4);
    memcpy(&mid, g + 4, 2);
    unsigned long long key = (unsigned long long)low | ((unsigned long long)mid << 32) |
                             ((unsigned long long)g[6] << 48);
    key *= 0x9E3779B97F4A7C15ULL;
    return key ^ (key >> 29);
}

/* A Bloom filter of 64-byte blocks (a power of two of them): both probes of a key fall in the
 * block its hash picks, one cache line per key. */
static inline void
bloom_set(unsigned char *table, size_t blocks, unsigned long long h)
{
    unsigned char *block = table + (((size_t)h & (blocks - 1)) * 64);
    size_t one = (size_t)(h >> 32) & 511, two = (size_t)(h >> 41) & 511;
    block[one >> 3] |= (unsigned char)(1u << (one & 7));
    block[two >> 3] |= (unsigned char)(1u << (two & 7));
}

PyDoc_STRVAR(gram_table_doc,
"gram_table(patterns, /)\n--\n\n"
"A Bloom filter (bytes) of every 7 consecutive bytes of every pattern, for seed_breaks;\n"
"None if a pattern is shorter than 7 bytes (then no break can be ruled out this way).");

static PyObject *
gram_table(PyObject *module, PyObject *patterns)
{
    (void)module;
    if (!PyList_Check(patterns)) {
        PyErr_SetString(PyExc_TypeError, "patterns must be a list of bytes");
        return NULL;
    }
    Py_ssize_t count = PyList_Size(patterns);
    size_t grams = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = PyList_GetItem(patterns, i);
        if (!PyBytes_Check(item)) {
            PyErr_SetString(PyExc_TypeError, "patterns must be a list of bytes");
            return NULL;
        }
        Py_ssize_t len = PyBytes_Size(item);
        if (len < GRAM)
            Py_RETURN_NONE;
        grams += (size_t)(len - GRAM + 1);
    }
    /* 8 bits per 7 bytes of pattern (a third of them repeat between the variants of a value):
     * ~1 % false candidates; 512 KiB for 1,000 values (benchmarks/redaction). */
    size_t bits = (size_t)1 << 12;
    while (bits < grams * 8 && bits < ((size_t)1 << 26))
        bits <<= 1;
    size_t blocks = bits / 512;
    unsigned char *table = PyMem_Calloc(bits / 8, 1);
    if (table == NULL)
        return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = PyList_GetItem(patterns, i);
        const unsigned char *p = (const unsigned char *)PyBytes_AsString(item);
        Py_ssize_t len = PyBytes_Size(item);
        for (Py_ssize_t at = 0; at + GRAM <= len; at++) {
            bloom_set(table, blocks, gram_hash(p + at));
        }
    }
    PyObject *out = PyBytes_FromStringAndSize((const char *)table, (Py_ssize_t)(bits / 8));
    PyMem_Free(table);
    return out;
}

typedef struct {
    const unsigned char *table; /* blocks of 64 bytes, a power of two of them, at least 8 */
    size_t blocks;
} gram_index;

static inline unsigned int
bloom_has(const gram_index *index, unsigned long long h)
{
    const unsigned char *block = index->table + (((size_t)h & (index->blocks - 1)) * 64);
    size_t one = (size_t)(h >> 32) & 511, two = (size_t)(h >> 41) & 511;
    return (unsigned int)((block[one >> 3] >> (one & 7)) & (block[two >> 3] >> (two & 7)) & 1);
}

/* Both probes of a gram fall in one 64-byte block: one cache line per gram. */
static inline unsigned int
has_gram(const gram_index *index, const unsigned char *g)
{
    return bloom_has(index, gram_hash(g));
}

/* The candidates of the break [b, e) (see crossable); returns how many (at most GRAM - 1). */
static int
break_grams(const unsigned char *data, Py_ssize_t b, Py_ssize_t e, unsigned char g[GRAM][GRAM])
{
    int n = 0;
    for (Py_ssize_t k = 1; k < GRAM - 1 && k <= b; k++, n++) { /* k = 1 to 5 before it */
        memcpy(g[n], data + b - k, (size_t)k);
        memcpy(g[n] + k, data + e, (size_t)(GRAM - k));
    }
    if (b >= GRAM - 1) { /* 6 or more before: the 6 bytes before the break, the one after */
        memcpy(g[n], data + b - (GRAM - 1), GRAM - 1);
        g[n][GRAM - 1] = data[e];
        n++;
    }
    return n;
}

/* Whether an occurrence of a pattern of one of the indexes may cross the break [b, e) first
 * (also when the bytes needed lie past the end of data). Every candidate is tested before the
 * answer is used: the table lookups overlap instead of waiting for each other. */
static int
crossable(const unsigned char *data, Py_ssize_t size, Py_ssize_t b, Py_ssize_t e,
          const gram_index *indexes, Py_ssize_t nindexes)
{
    if (e + GRAM > size)
        return 1;
    unsigned char g[GRAM][GRAM];
    int n = break_grams(data, b, e, g);
    unsigned int hit = 0;
    for (Py_ssize_t j = 0; j < nindexes; j++)
        for (int c = 0; c < n; c++)
            hit |= has_gram(&indexes[j], g[c]);
    return hit != 0;
}

/* How many breaks ahead seed_breaks fetches the table's blocks. */
#define PREFETCH_AHEAD 4

/* Ask for the table blocks that crossable will read for the break [b, e). */
static void
prefetch_break(const unsigned char *data, Py_ssize_t size, Py_ssize_t b, Py_ssize_t e,
               const gram_index *indexes, Py_ssize_t nindexes)
{
    if (e + GRAM > size)
        return;
    unsigned char g[GRAM][GRAM];
    int n = break_grams(data, b, e, g);
    for (Py_ssize_t j = 0; j < nindexes; j++)
        for (int c = 0; c < n; c++) {
            unsigned long long h = gram_hash(g[c]);
            __builtin_prefetch(indexes[j].table + (((size_t)h & (indexes[j].blocks - 1)) * 64));
        }
}

PyDoc_STRVAR(seed_breaks_doc,
"seed_breaks(data, breaks, longest, span, tables, /)\n--\n\n"
"The breaks whose joined windows are needed: every break that an occurrence may cross first\n"
"(tables: the gram_table of each pattern set), and every break inside the window\n"
"[start - longest - 2, end + span) of such a break. A sub-list of breaks (the same tuples).");

static PyObject *
seed_breaks(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "seed_breaks() takes exactly 5 arguments");
        return NULL;
    }
    PyObject *breaks = args[1], *table_list = args[4];
    if (!PyList_Check(breaks) || !PyList_Check(table_list)) {
        PyErr_SetString(PyExc_TypeError, "breaks and tables must be lists");
        return NULL;
    }
    Py_ssize_t longest, span;
    if (window_sizes(args, &longest, &span) < 0)
        return NULL;
    Py_ssize_t ntables = PyList_Size(table_list);
    Py_ssize_t count = PyList_Size(breaks);
    gram_index *indexes = PyMem_Calloc((size_t)ntables + 1, sizeof(gram_index));
    Py_buffer *tables = PyMem_Calloc((size_t)ntables + 1, sizeof(Py_buffer));
    Py_ssize_t *bounds = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(2 * count + 1));
    unsigned char *seed = PyMem_Calloc((size_t)count + 1, 1);
    Py_ssize_t held = 0;
    PyObject *out = NULL;
    Py_buffer view;
    int have_view = 0;
    if (!indexes || !tables || !bounds || !seed) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t j = 0; j < ntables; j++) {
        if (get_buffer(PyList_GetItem(table_list, j), &tables[j], "a gram table") < 0)
            goto done;
        held++;
        size_t bytes = (size_t)tables[j].len;
        if (bytes < 512 || (bytes & (bytes - 1)) != 0) {
            PyErr_SetString(PyExc_ValueError, "not a gram table");
            goto done;
        }
        indexes[j].table = (const unsigned char *)tables[j].buf;
        indexes[j].blocks = bytes / 64;
    }
    if (get_buffer(args[0], &view, "data") < 0)
        goto done;
    have_view = 1;
    const unsigned char *data = (const unsigned char *)view.buf;
    Py_ssize_t size = view.len;
    Py_ssize_t prev_end = 0;
    for (Py_ssize_t i = 0; i < count; i++)
        if (next_break(breaks, i, size, &prev_end, &bounds[2 * i], &bounds[2 * i + 1]) < 0)
            goto done;
    /* The table's blocks of a few breaks ahead are fetched while a break is tested: right
     * after the Hyperscan pass the table is out of the caches, and a dump has a break on
     * every line. */
    for (Py_ssize_t i = 0; i < count && i < PREFETCH_AHEAD; i++)
        prefetch_break(data, size, bounds[2 * i], bounds[2 * i + 1], indexes, ntables);
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_ssize_t ahead = i + PREFETCH_AHEAD;
        if (ahead < count)
            prefetch_break(data, size, bounds[2 * ahead], bounds[2 * ahead + 1], indexes, ntables);
        Py_ssize_t b = bounds[2 * i], e = bounds[2 * i + 1];
        seed[i] = (unsigned char)crossable(data, size, b, e, indexes, ntables);
    }
    out = PyList_New(0);
    if (out == NULL)
        goto done;
    /* The seeds' windows, merged, in order; a break is kept when it lies inside one. */
    Py_ssize_t next_seed = 0, lo = 0, hi = -1;
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_ssize_t b = bounds[2 * i], e = bounds[2 * i + 1];
        while (next_seed < count) { /* every seed whose window starts at or before b */
            if (!seed[next_seed]) {
                next_seed++;
                continue;
            }
            Py_ssize_t s_lo = bounds[2 * next_seed] - longest - 2;
            if (s_lo < 0)
                s_lo = 0;
            if (s_lo > b)
                break;
            Py_ssize_t s_hi = bounds[2 * next_seed + 1] + span;
            if (s_hi > size)
                s_hi = size;
            if (s_lo > hi) {
                lo = s_lo;
                hi = s_hi;
            } else if (s_hi > hi) {
                hi = s_hi;
            }
            next_seed++;
        }
        if ((seed[i] || (lo <= b && e <= hi)) && PyList_Append(out, PyList_GetItem(breaks, i)) < 0) {
            Py_CLEAR(out);
            goto done;
        }
    }
done:
    if (have_view)
        PyBuffer_Release(&view);
    for (Py_ssize_t j = 0; j < held; j++)
        PyBuffer_Release(&tables[j]);
    PyMem_Free(indexes);
    PyMem_Free(tables);
    PyMem_Free(bounds);
    PyMem_Free(seed);
    return out;
}

/* ---- Where a pattern's first bytes occur (a stream's held-back tail) ----------------------
 *
 * A stream asks where in its last ~100 bytes a pattern may begin: at a position whose next
 * PREFIX_GRAM bytes are some pattern's first ones (engine.GRAM; prefixes.PrefixIndex confirms
 * each answer exactly). A Bloom filter of those grams (16 bits each: 32 KiB at 1,000 values,
 * a few hundred bytes for a run's own secrets) answers per position with one cache line, where
 * a Hyperscan scan of a gram database cost ~1 us per call, mostly in getting its tables back
 * into the caches. */

#define PREFIX_GRAM 6

static inline unsigned long long
prefix_hash(const unsigned char *g)
{
    uint32_t low;
    uint16_t mid;
    memcpy(&low, g, 4);
    memcpy(&mid, g + 4, 2);
    unsigned long long key = (unsigned long long)low | ((unsigned long long)mid << 32);
    key *= 0x9E3779B97F4A7C15ULL;
    return key ^ (key >> 29);
}

PyDoc_STRVAR(prefix_table_doc,
"prefix_table(grams, /)\n--\n\n"
"A Bloom filter (bytes) of the PREFIX_GRAM-byte grams (a list of bytes of that length), for\n"
"prefix_starts.");

static PyObject *
prefix_table(PyObject *module, PyObject *grams)
{
    (void)module;
    if (!PyList_Check(grams)) {
        PyErr_SetString(PyExc_TypeError, "grams must be a list of bytes");
        return NULL;
    }
    Py_ssize_t count = PyList_Size(grams);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = PyList_GetItem(grams, i);
        if (!PyBytes_Check(item) || PyBytes_Size(item) != PREFIX_GRAM) {
            PyErr_Format(PyExc_ValueError, "grams must be bytes of length %d", PREFIX_GRAM);
            return NULL;
        }
    }
    size_t bits = (size_t)1 << 12;
    while (bits < (size_t)count * 16 && bits < ((size_t)1 << 26))
        bits <<= 1;
    unsigned char *table = PyMem_Calloc(bits / 8, 1);
    if (table == NULL)
        return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < count; i++) {
        const unsigned char *g = (const unsigned char *)PyBytes_AsString(PyList_GetItem(grams, i));
        bloom_set(table, bits / 512, prefix_hash(g));
    }
    PyObject *out = PyBytes_FromStringAndSize((const char *)table, (Py_ssize_t)(bits / 8));
    PyMem_Free(table);
    return out;
}

PyDoc_STRVAR(prefix_starts_doc,
"prefix_starts(text, table, /)\n--\n\n"
"The positions i of text, in order, whose PREFIX_GRAM bytes text[i:i + PREFIX_GRAM] may be\n"
"one of the prefix_table's grams (every one that is, and rarely one that is not).");

static PyObject *
prefix_starts(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "prefix_starts() takes exactly 2 arguments");
        return NULL;
    }
    Py_buffer view, table_view;
    if (get_buffer(args[0], &view, "text") < 0)
        return NULL;
    if (get_buffer(args[1], &table_view, "table") < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    PyObject *out = NULL;
    size_t bytes = (size_t)table_view.len;
    if (bytes < 512 || (bytes & (bytes - 1)) != 0) {
        PyErr_SetString(PyExc_ValueError, "not a prefix table");
        goto done;
    }
    gram_index index = {(const unsigned char *)table_view.buf, bytes / 64};
    const unsigned char *text = (const unsigned char *)view.buf;
    out = PyList_New(0);
    if (out == NULL)
        goto done;
    for (Py_ssize_t i = 0; i + PREFIX_GRAM <= view.len; i++) {
        if (bloom_has(&index, prefix_hash(text + i)) && append_int(out, i) < 0) {
            Py_CLEAR(out);
            goto done;
        }
    }
done:
    PyBuffer_Release(&table_view);
    PyBuffer_Release(&view);
    return out;
}

static PyMethodDef linescan_methods[] = {
    {"prefix_table", prefix_table, METH_O, prefix_table_doc},
    {"prefix_starts", (PyCFunction)(void (*)(void))prefix_starts, METH_FASTCALL,
     prefix_starts_doc},
    {"wrap_newlines", (PyCFunction)(void (*)(void))wrap_newlines, METH_FASTCALL,
     wrap_newlines_doc},
    {"wrap_breaks", (PyCFunction)(void (*)(void))wrap_breaks, METH_FASTCALL, wrap_breaks_doc},
    {"joined_windows", (PyCFunction)(void (*)(void))joined_windows, METH_FASTCALL,
     joined_windows_doc},
    {"gram_table", gram_table, METH_O, gram_table_doc},
    {"seed_breaks", (PyCFunction)(void (*)(void))seed_breaks, METH_FASTCALL, seed_breaks_doc},
    {NULL, NULL, 0, NULL},
};

static int
linescan_exec(PyObject *module)
{
    for (const char *c = WRAP_ALPHABET; *c; c++)
        is_wrap[(unsigned char)*c] = 1;
#if HAVE_SSE2
    /* The vector test must agree with the table for every byte value, in every lane. */
    for (int b = 0; b < 256; b++) {
        unsigned char block[16];
        memset(block, 'A', sizeof block);
        for (int lane = 0; lane < 16; lane++) {
            block[lane] = (unsigned char)b;
            if (all_wrap16(block) != is_wrap[b]) {
                PyErr_SetString(PyExc_ImportError, "_linescan: vector test disagrees");
                return -1;
            }
            block[lane] = 'A';
        }
    }
#endif
    if (PyModule_AddIntConstant(module, "PREFIX_GRAM", PREFIX_GRAM) < 0)
        return -1;
    if (PyModule_AddIntConstant(module, "WRAP_MIN_WIDTH", WRAP_MIN_WIDTH) < 0)
        return -1;
    PyObject *alphabet = PyBytes_FromString(WRAP_ALPHABET);
    if (alphabet == NULL)
        return -1;
    int rc = PyModule_AddObjectRef(module, "WRAP_ALPHABET", alphabet);
    Py_DECREF(alphabet);
    return rc;
}

static PyModuleDef_Slot linescan_slots[] = {
    {Py_mod_exec, linescan_exec},
    {0, NULL},
};

static struct PyModuleDef linescan_module = {
    PyModuleDef_HEAD_INIT,
    "_linescan",
    "Wrap-break triggers of the redaction engine (see engine.py).",
    0,
    linescan_methods,
    linescan_slots,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit__linescan(void)
{
    return PyModuleDef_Init(&linescan_module);
}
