/* lockship-unpack: unpack a .sh installer's program folder, as fast as the machine allows.
 *
 * Usage: lockship-unpack FILE OFFSET LENGTH FOLDER [LOCK_FD]
 *
 * Bytes OFFSET..OFFSET+LENGTH of FILE are zstd frames (each with its content size and
 * checksum) that together hold one ustar archive; it is extracted into FOLDER, which must
 * exist (lockship-tar.c). Worker threads (one per CPU, at most one per frame) decode the frames in order while
 * the main thread writes the files out of them; at most one frame more than there are threads
 * is held decoded at a time, and each frame's compressed pages are let go once it is decoded,
 * so memory stays at a few frames (~30 MB) whatever the size of the program. Only
 * directories, regular files and symbolic links are accepted, and no name may be absolute or
 * contain "..": the archive is lockship's own (builder/stubs/pack.py). With LOCK_FD (the header's
 * open FOLDER/.lock) it locks the folder for the program's lifetime and, once unpacked, removes
 * the folders that installers killed outright left beside it (lockship-sweep.c).
 *
 * Exit status: 0 unpacked; 2 the bytes are damaged (a frame or the archive does not decode),
 * with one line on stderr; 1 anything else (usage, reading, writing: a full or read-only
 * folder), with one line on stderr. The shell header tries another folder after 1, and
 * reports a damaged installer after 2. Compiled with the zstd library python-zstandard ships
 * (builder/stubs/freeze.py), by the C compiler of the machine that freezes the stub.
 */
#define _GNU_SOURCE
#define ZSTD_STATIC_LINKING_ONLY
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>
#include <unistd.h>

#include "lockship-unpack.h"
#include "zstd.h"

#ifndef MAP_ANONYMOUS
#define MAP_ANONYMOUS MAP_ANON
#endif

#define MAX_FRAMES 64
#define MAX_THREADS 8

enum { WAITING, DECODED, BROKEN, NO_MEMORY };

struct frame {
    const unsigned char *in;
    size_t in_size;
    unsigned char *out; /* a buffer of the pool while the frame is decoded and not yet written */
    size_t out_size;
    int state;
};

static int write_all(int fd, const unsigned char *data, size_t size);

static struct frame frames[MAX_FRAMES];
static size_t frame_count, largest_frame;
static int input_mapped;
/* Guarded by lock. Frames are claimed in order, and at most ``window`` of them hold a buffer
 * at a time (claimed, not yet written out): memory stays at ``window`` frames, whatever the
 * size of the program. A written frame's buffer goes back to the pool for the next one. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t decoded = PTHREAD_COND_INITIALIZER, released = PTHREAD_COND_INITIALIZER;
static size_t next_frame, frames_released, window;
static unsigned char *pool[MAX_THREADS + 1];
static size_t pooled;
static int stopping;

int fail(int status, const char *what, const char *detail)
{
    fprintf(stderr, "lockship-unpack: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    return status;
}

/* pages of the mapped installer, rounded out to whole pages */
static void advise_input(const unsigned char *in, size_t size, int advice)
{
#ifdef __linux__
    if (!input_mapped)
        return; /* a copy in the heap: MADV_DONTNEED would zero it */
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t start = (uintptr_t)in / page * page;
    uintptr_t end = ((uintptr_t)in + size + page - 1) / page * page;
    madvise((void *)start, end - start, advice); /* advice only: an old kernel may say EINVAL */
#else
    (void)in;
    (void)size;
    (void)advice;
#endif
}

static unsigned char *new_buffer(void)
{
    size_t size = largest_frame ? largest_frame : 1;
    unsigned char *buffer =
        mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buffer == MAP_FAILED)
        return NULL;
#ifdef MADV_HUGEPAGE
    madvise(buffer, size, MADV_HUGEPAGE); /* 10 MB in 4 kB pages is 2,400 page faults */
#endif
    return buffer;
}

/* decode frame ``index`` into ``buffer`` (NULL: out of memory), and say so to the writer */
static void decode(ZSTD_DCtx *context, size_t index, unsigned char *buffer)
{
    struct frame *f = &frames[index];
#if defined(__linux__) && defined(MADV_POPULATE_READ)
    /* one call instead of a page fault per page */
    advise_input(f->in, f->in_size, MADV_POPULATE_READ);
#endif
    size_t written = context && buffer ? ZSTD_decompressDCtx(context, buffer, f->out_size, f->in,
                                                             f->in_size)
                                       : 0;
    int ok = context && buffer && !ZSTD_isError(written) && written == f->out_size;
#ifdef MADV_DONTNEED
    /* decoded: its compressed pages leave this process */
    advise_input(f->in, f->in_size, MADV_DONTNEED);
#endif
    pthread_mutex_lock(&lock);
    f->out = buffer;
    f->state = ok ? DECODED : buffer && context ? BROKEN : NO_MEMORY;
    pthread_cond_broadcast(&decoded);
    pthread_mutex_unlock(&lock);
}

static void *decode_frames(void *unused)
{
    (void)unused;
    ZSTD_DCtx *context = ZSTD_createDCtx();
    for (;;) {
        pthread_mutex_lock(&lock);
        while (!stopping && next_frame < frame_count && next_frame >= frames_released + window)
            pthread_cond_wait(&released, &lock);
        if (stopping || next_frame >= frame_count) {
            pthread_mutex_unlock(&lock);
            break;
        }
        size_t index = next_frame++;
        unsigned char *buffer = pooled ? pool[--pooled] : NULL;
        pthread_mutex_unlock(&lock);
        decode(context, index, buffer ? buffer : new_buffer());
    }
    ZSTD_freeDCtx(context);
    return NULL;
}

static void stop_decoding(void)
{
    pthread_mutex_lock(&lock);
    stopping = 1;
    pthread_cond_broadcast(&released);
    pthread_mutex_unlock(&lock);
}

/* The archive as one stream over the frames, read by the main thread in order. */
struct reader {
    size_t frame, at; /* the frame being read, and the position in it */
    int threads;      /* 0: decode each frame here, when it is needed */
    ZSTD_DCtx *context;
};

/* the current frame decoded (0), DAMAGED, or NO_ROOM_IN_MEMORY to decode it in */
static int current(struct reader *r)
{
    struct frame *f = &frames[r->frame];
    if (!r->threads && f->state == WAITING) {
        unsigned char *buffer = pooled ? pool[--pooled] : NULL; /* no other thread runs */
        decode(r->context, r->frame, buffer ? buffer : new_buffer());
    }
    pthread_mutex_lock(&lock);
    while (f->state == WAITING)
        pthread_cond_wait(&decoded, &lock);
    int state = f->state;
    pthread_mutex_unlock(&lock);
    return state == DECODED ? 0 : state == BROKEN ? DAMAGED : NO_ROOM_IN_MEMORY;
}

/* move past ``size`` bytes of the current frame; a frame read to its end gives its buffer back */
static void advance(struct reader *r, size_t size)
{
    r->at += size;
    while (r->frame < frame_count && r->at == frames[r->frame].out_size) {
        pthread_mutex_lock(&lock);
        if (frames[r->frame].out)
            pool[pooled++] = frames[r->frame].out;
        frames[r->frame].out = NULL;
        frames_released = r->frame + 1;
        pthread_cond_broadcast(&released);
        pthread_mutex_unlock(&lock);
        r->frame++;
        r->at = 0;
    }
}

int take(struct reader *r, size_t size, int fd, unsigned char *copy)
{
    while (size > 0) {
        if (r->frame >= frame_count)
            return DAMAGED;
        int status = current(r);
        if (status != 0)
            return status;
        struct frame *f = &frames[r->frame];
        size_t part = f->out_size - r->at < size ? f->out_size - r->at : size;
        if (fd >= 0 && write_all(fd, f->out + r->at, part) != 0)
            return FAILED;
        if (copy) {
            memcpy(copy, f->out + r->at, part);
            copy += part;
        }
        size -= part;
        advance(r, part);
    }
    return 0;
}

static int read_all(int fd, unsigned char *buffer, size_t size, off_t offset)
{
    while (size > 0) {
        ssize_t got = pread(fd, buffer, size, offset);
        if (got <= 0) {
            if (got < 0 && errno == EINTR)
                continue;
            return -1;
        }
        buffer += got;
        size -= (size_t)got;
        offset += got;
    }
    return 0;
}

static int write_all(int fd, const unsigned char *data, size_t size)
{
    while (size > 0) {
        ssize_t put = write(fd, data, size);
        if (put < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        data += put;
        size -= (size_t)put;
    }
    return 0;
}

int take_failed(const struct reader *r, int status, const char *where)
{
    if (status == NO_ROOM_IN_MEMORY)
        return fail(FAILED, "out of memory", NULL);
    if (status == FAILED)
        return fail(FAILED, "cannot write a file", strerror(errno));
    if (r->frame >= frame_count)
        return fail(DAMAGED, "the program archive is damaged", where);
    return fail(DAMAGED, "the program is damaged", "a zstd frame does not decode");
}

int main(int argc, char **argv)
{
    if (argc != 5 && argc != 6)
        return fail(FAILED, "usage: lockship-unpack FILE OFFSET LENGTH FOLDER [LOCK_FD]", NULL);
    char *end;
    errno = 0;
    long lock_fd = argc == 6 ? strtol(argv[5], &end, 10) : -1;
    if (argc == 6 && (errno || *end || end == argv[5] || lock_fd < 0 || lock_fd > INT_MAX))
        return fail(FAILED, "LOCK_FD is not a file descriptor", argv[5]);
    unsigned long long offset = strtoull(argv[2], &end, 10);
    if (errno || *end || end == argv[2])
        return fail(FAILED, "OFFSET is not a number", argv[2]);
    unsigned long long length = strtoull(argv[3], &end, 10);
    if (errno || *end || end == argv[3] || length == 0 || length > SIZE_MAX)
        return fail(FAILED, "LENGTH is not a number", argv[3]);
    int fd = open(argv[1], O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fail(FAILED, "cannot open the installer", strerror(errno));
    int folder = open(argv[4], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (folder < 0)
        return fail(FAILED, "cannot open the folder", strerror(errno));
    if (lock_fd >= 0 && lock_folder((int)lock_fd) != 0)
        return fail(FAILED, "cannot lock the folder", strerror(errno));
    struct stat file;
    if (fstat(fd, &file) != 0)
        return fail(FAILED, "cannot read the installer", strerror(errno));
    if (offset > (unsigned long long)file.st_size || length > file.st_size - offset)
        return fail(DAMAGED, "cannot read the program from the installer", "it is truncated");
    /* the frames are read where the page cache has them; a copy only where mapping fails */
    long page = sysconf(_SC_PAGESIZE);
    size_t skew = (size_t)(offset % (unsigned long long)(page > 0 ? page : 4096));
    unsigned char *mapped =
        mmap(NULL, (size_t)length + skew, PROT_READ, MAP_PRIVATE, fd, (off_t)(offset - skew));
    const unsigned char *input = mapped + skew;
    input_mapped = mapped != MAP_FAILED;
    if (!input_mapped) {
        unsigned char *copy = malloc((size_t)length);
        if (copy == NULL)
            return fail(FAILED, "out of memory", NULL);
        if (read_all(fd, copy, (size_t)length, (off_t)offset) != 0)
            return fail(DAMAGED, "cannot read the program from the installer", "it is truncated");
        input = copy;
    }
    close(fd);

    size_t needed = 0; /* the archive's size: a little more than its files' */
    for (size_t at = 0; at < length;) {
        if (frame_count == MAX_FRAMES)
            return fail(DAMAGED, "the program is damaged", "too many frames");
        size_t in_size = ZSTD_findFrameCompressedSize(input + at, (size_t)length - at);
        unsigned long long out_size = ZSTD_getFrameContentSize(input + at, (size_t)length - at);
        if (ZSTD_isError(in_size) || out_size == ZSTD_CONTENTSIZE_UNKNOWN ||
            out_size == ZSTD_CONTENTSIZE_ERROR || out_size > SIZE_MAX - needed)
            return fail(DAMAGED, "the program is damaged", "a zstd frame header is invalid");
        frames[frame_count].in = input + at;
        frames[frame_count].in_size = in_size;
        frames[frame_count].out_size = (size_t)out_size;
        if (out_size > largest_frame)
            largest_frame = (size_t)out_size;
        needed += (size_t)out_size;
        frame_count++;
        at += in_size;
#ifdef MADV_DONTNEED
        /* finding its size walked the frame's blocks, which maps most of it (large page cache
         * folios map whole): let it go, its decoder maps it again */
        advise_input(input + at - in_size, in_size, MADV_DONTNEED);
#endif
    }
    /* a folder without room for the program is refused before anything is written: filling
     * the user's temporary folder to the last byte would fail other programs writing there */
    struct statvfs room;
    if (fstatvfs(folder, &room) == 0 && room.f_blocks > 0) {
        unsigned long long free_bytes =
            (unsigned long long)room.f_bavail * (room.f_frsize ? room.f_frsize : room.f_bsize);
        if (free_bytes < needed) {
            char detail[96];
            snprintf(detail, sizeof detail, "the program needs %llu MB, %llu MB are free",
                     ((unsigned long long)needed >> 20) + 1, free_bytes >> 20);
            return fail(FAILED, "not enough room", detail);
        }
    }

    /* LOCKSHIP_UNPACK_THREADS: decoding threads (default one per CPU; 0: the main thread) */
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    const char *wanted = getenv("LOCKSHIP_UNPACK_THREADS");
    if (wanted && *wanted) {
        errno = 0;
        cpus = strtol(wanted, &end, 10);
        if (errno || *end || cpus < 0)
            return fail(FAILED, "LOCKSHIP_UNPACK_THREADS is not a number of threads", wanted);
    }
    size_t threads = cpus < 1 ? (wanted && *wanted ? 0 : 1) : (size_t)cpus;
    if (threads > MAX_THREADS)
        threads = MAX_THREADS;
    if (threads > frame_count)
        threads = frame_count;
    /* one frame more than the decoders: the one being written while they decode the next */
    window = threads + 1;
    pthread_t workers[MAX_THREADS];
    size_t started = 0;
    for (; started < threads; started++)
        if (pthread_create(&workers[started], NULL, decode_frames, NULL) != 0)
            break;
    struct reader reader = {0, 0, started > 0, started > 0 ? NULL : ZSTD_createDCtx()};
    if (started == 0)
        window = 1; /* no threads: each frame is decoded here when it is needed */
    int status = extract(&reader, folder);
    /* the workers finish before the process exits (a damaged archive may stop early) */
    stop_decoding();
    for (size_t i = 0; i < started; i++)
        pthread_join(workers[i], NULL);
    if (status == 0 && lock_fd >= 0)
        sweep_stale_folders(folder);
    return status;
}
