/* lockship-unpack: unpack a .sh installer's program folder, as fast as the machine allows.
 *
 * Usage: lockship-unpack FILE OFFSET LENGTH FOLDER
 *
 * Bytes OFFSET..OFFSET+LENGTH of FILE are zstd frames (each with its content size and
 * checksum) that together hold one ustar archive; it is extracted into FOLDER, which must
 * exist. Worker threads (one per CPU, at most one per frame) decode the frames while the main
 * thread writes out each file as soon as the frames holding it are decoded. Only directories, regular files and symbolic links are accepted, and no name
 * may be absolute or contain "..": the archive is lockship's own (builder/stubpack.py).
 *
 * Exit status: 0 unpacked; 2 the bytes are damaged (a frame or the archive does not decode),
 * with one line on stderr; 1 anything else (usage, reading, writing: a full or read-only
 * folder), with one line on stderr. The shell header tries another folder after 1, and
 * reports a damaged installer after 2. Compiled with the zstd library python-zstandard ships
 * (builder/freeze.py), by the C compiler of the machine that freezes the stub.
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
#include <sys/types.h>
#include <unistd.h>

#include "zstd.h"

#ifdef MAP_POPULATE
#define POPULATE MAP_POPULATE
#else
#define POPULATE 0
#endif
#ifndef MAP_ANONYMOUS
#define MAP_ANONYMOUS MAP_ANON
#endif

#define MAX_FRAMES 64
#define MAX_THREADS 8
#define DAMAGED 2
#define FAILED 1

struct frame {
    const unsigned char *in;
    size_t in_size;
    unsigned char *out;
    size_t out_size;
    int done, ok;
};

static struct frame frames[MAX_FRAMES];
static size_t frame_count;
/* guarded by lock: the next frame to claim, and how far the output is decoded without a gap */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t decoded = PTHREAD_COND_INITIALIZER;
static size_t next_frame, frames_in_order, decoded_end;
static int broken;

static int write_all(int fd, const unsigned char *data, size_t size);

static int fail(int status, const char *what, const char *detail)
{
    fprintf(stderr, "lockship-unpack: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    return status;
}

static void *decode_frames(void *unused)
{
    (void)unused;
    ZSTD_DCtx *context = ZSTD_createDCtx();
    for (;;) {
        pthread_mutex_lock(&lock);
        size_t index = next_frame++;
        pthread_mutex_unlock(&lock);
        if (index >= frame_count)
            break;
        struct frame *f = &frames[index];
        size_t written = context == NULL ? 0 : ZSTD_decompressDCtx(context, f->out, f->out_size,
                                                                   f->in, f->in_size);
        pthread_mutex_lock(&lock);
        f->ok = context != NULL && !ZSTD_isError(written) && written == f->out_size;
        f->done = 1;
        for (; frames_in_order < frame_count && frames[frames_in_order].done; frames_in_order++) {
            if (!frames[frames_in_order].ok) {
                broken = 1;
                break;
            }
            decoded_end += frames[frames_in_order].out_size;
        }
        pthread_cond_broadcast(&decoded);
        pthread_mutex_unlock(&lock);
    }
    ZSTD_freeDCtx(context);
    return NULL;
}

/* wait until the output is decoded past ``at``; how far it is decoded (0: a frame before
 * ``at`` does not decode) */
static size_t decoded_past(size_t at)
{
    pthread_mutex_lock(&lock);
    while (!broken && decoded_end <= at)
        pthread_cond_wait(&decoded, &lock);
    size_t end = decoded_end > at ? decoded_end : 0;
    pthread_mutex_unlock(&lock);
    return end;
}

static int decoded_up_to(size_t end)
{
    return end == 0 || decoded_past(end - 1) >= end;
}

/* write ``size`` bytes of the output from ``at`` to ``fd``, each part once it is decoded */
static int write_decoded(int fd, const unsigned char *output, size_t at, size_t size)
{
    while (size > 0) {
        size_t end = decoded_past(at);
        if (end == 0)
            return DAMAGED;
        size_t part = end - at < size ? end - at : size;
        if (write_all(fd, output + at, part) != 0)
            return FAILED;
        at += part;
        size -= part;
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

/* a ustar numeric field: octal digits, NUL or space terminated */
static int octal(const unsigned char *field, size_t width, unsigned long long *value)
{
    unsigned long long result = 0;
    size_t i = 0;
    while (i < width && field[i] == ' ')
        i++;
    size_t digits = 0;
    for (; i < width && field[i] >= '0' && field[i] <= '7'; i++, digits++)
        result = result * 8 + (unsigned long long)(field[i] - '0');
    if (digits == 0 || (i < width && field[i] != '\0' && field[i] != ' '))
        return -1;
    *value = result;
    return 0;
}

static int safe_name(const char *name)
{
    if (name[0] == '\0' || name[0] == '/')
        return 0;
    for (const char *part = name; part; part = strchr(part, '/')) {
        if (*part == '/')
            part++;
        if (strncmp(part, "..", 2) == 0 && (part[2] == '/' || part[2] == '\0'))
            return 0;
    }
    return 1;
}

static int extract(const unsigned char *archive, size_t size, int folder)
{
    char name[256 + 2], target[101];
    size_t at = 0;
    while (at + 512 <= size) {
        if (!decoded_up_to(at + 512))
            return fail(DAMAGED, "the program is damaged", "a zstd frame does not decode");
        const unsigned char *header = archive + at;
        if (header[0] == '\0')
            return 0; /* the end-of-archive blocks */
        if (memcmp(header + 257, "ustar", 5) != 0)
            return fail(DAMAGED, "the program archive is damaged", "not a ustar header");
        unsigned long long mode, length;
        if (octal(header + 100, 8, &mode) || octal(header + 124, 12, &length))
            return fail(DAMAGED, "the program archive is damaged", "bad header field");
        const char *prefix = (const char *)header + 345;
        int prefix_length = (int)strnlen(prefix, 155);
        snprintf(name, sizeof name, "%.*s%s%.*s", prefix_length, prefix, prefix_length ? "/" : "",
                 (int)strnlen((const char *)header, 100), (const char *)header);
        if (!safe_name(name))
            return fail(DAMAGED, "the program archive names an unsafe path", name);
        size_t data = at + 512;
        if (length > size - data)
            return fail(DAMAGED, "the program archive is damaged", "it ends inside a file");
        int kind = header[156];
        if (kind == '5') {
            if (mkdirat(folder, name, (mode_t)(mode & 0777)) != 0 && errno != EEXIST)
                return fail(FAILED, "cannot create a folder", strerror(errno));
        } else if (kind == '0' || kind == '\0') {
            int fd = openat(folder, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
                            (mode_t)(mode & 0777));
            if (fd < 0)
                return fail(FAILED, "cannot create a file", strerror(errno));
            int status = write_decoded(fd, archive, data, (size_t)length);
            if (status == DAMAGED)
                return fail(DAMAGED, "the program is damaged", "a zstd frame does not decode");
            if (close(fd) != 0 || status != 0)
                return fail(FAILED, "cannot write a file", strerror(errno));
        } else if (kind == '2') {
            snprintf(target, sizeof target, "%.*s", (int)strnlen((const char *)header + 157, 100),
                     (const char *)header + 157);
            if (symlinkat(target, folder, name) != 0)
                return fail(FAILED, "cannot create a symbolic link", strerror(errno));
        } else {
            return fail(DAMAGED, "the program archive holds an entry of an unknown kind", name);
        }
        at = data + ((size_t)length + 511) / 512 * 512;
    }
    return fail(DAMAGED, "the program archive is damaged", "it has no end");
}

int main(int argc, char **argv)
{
    if (argc != 5)
        return fail(FAILED, "usage: lockship-unpack FILE OFFSET LENGTH FOLDER", NULL);
    char *end;
    errno = 0;
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
    struct stat file;
    if (fstat(fd, &file) != 0)
        return fail(FAILED, "cannot read the installer", strerror(errno));
    if (offset > (unsigned long long)file.st_size || length > file.st_size - offset)
        return fail(DAMAGED, "cannot read the program from the installer", "it is truncated");
    /* the frames are read where the page cache has them; a copy only where mapping fails */
    long page = sysconf(_SC_PAGESIZE);
    size_t skew = (size_t)(offset % (unsigned long long)(page > 0 ? page : 4096));
    unsigned char *mapped = mmap(NULL, (size_t)length + skew, PROT_READ, MAP_PRIVATE | POPULATE,
                                 fd, (off_t)(offset - skew));
    const unsigned char *input = mapped + skew;
    if (mapped == MAP_FAILED) {
        unsigned char *copy = malloc((size_t)length);
        if (copy == NULL)
            return fail(FAILED, "out of memory", NULL);
        if (read_all(fd, copy, (size_t)length, (off_t)offset) != 0)
            return fail(DAMAGED, "cannot read the program from the installer", "it is truncated");
        input = copy;
    }
    close(fd);

    size_t total = 0;
    for (size_t at = 0; at < length;) {
        if (frame_count == MAX_FRAMES)
            return fail(DAMAGED, "the program is damaged", "too many frames");
        size_t in_size = ZSTD_findFrameCompressedSize(input + at, (size_t)length - at);
        unsigned long long out_size = ZSTD_getFrameContentSize(input + at, (size_t)length - at);
        if (ZSTD_isError(in_size) || out_size == ZSTD_CONTENTSIZE_UNKNOWN ||
            out_size == ZSTD_CONTENTSIZE_ERROR || out_size > SIZE_MAX - total)
            return fail(DAMAGED, "the program is damaged", "a zstd frame header is invalid");
        frames[frame_count].in = input + at;
        frames[frame_count].in_size = in_size;
        frames[frame_count].out_size = (size_t)out_size;
        frame_count++;
        total += (size_t)out_size;
        at += in_size;
    }
    /* one mapping for the whole archive, in huge pages where the kernel offers them: 77 MB in
     * 4 kB pages is 19,000 page faults */
    unsigned char *output = mmap(NULL, total ? total : 1, PROT_READ | PROT_WRITE,
                                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (output == MAP_FAILED)
        return fail(FAILED, "out of memory", NULL);
#ifdef MADV_HUGEPAGE
    madvise(output, total ? total : 1, MADV_HUGEPAGE);
#endif
    for (size_t i = 0, at = 0; i < frame_count; at += frames[i].out_size, i++)
        frames[i].out = output + at;

    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    size_t threads = cpus < 1 ? 1 : (size_t)cpus;
    if (threads > MAX_THREADS)
        threads = MAX_THREADS;
    if (threads > frame_count)
        threads = frame_count;
    pthread_t workers[MAX_THREADS];
    size_t started = 0;
    for (; started < threads; started++)
        if (pthread_create(&workers[started], NULL, decode_frames, NULL) != 0)
            break;
    if (started == 0)
        decode_frames(NULL); /* no threads: decode everything first */
    int status = extract(output, total, folder);
    /* the workers finish before the process exits (a damaged archive may stop early) */
    for (size_t i = 0; i < started; i++)
        pthread_join(workers[i], NULL);
    return status;
}
