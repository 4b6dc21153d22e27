/* lockship-unpack's third part: extracting the program's ustar archive.
 *
 * The archive is lockship's own (builder/stubs/pack.py), read as one stream over the decoded
 * frames (take(), lockship-unpack.c). Only directories, regular files and symbolic links are
 * accepted, and no name may be absolute or contain "..".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lockship-unpack.h"

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

int extract(struct reader *r, int folder)
{
    unsigned char header[512];
    char name[256 + 2], target[101];
    for (;;) {
        int status = take(r, sizeof header, -1, header);
        if (status != 0)
            return take_failed(r, status, "it has no end");
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
        if (length > SIZE_MAX - 511)
            return fail(DAMAGED, "the program archive is damaged", "bad header field");
        size_t padding = ((size_t)length + 511) / 512 * 512 - (size_t)length;
        int kind = header[156];
        if (kind == '5') {
            if (mkdirat(folder, name, (mode_t)(mode & 0777)) != 0 && errno != EEXIST)
                return fail(FAILED, "cannot create a folder", strerror(errno));
        } else if (kind == '0' || kind == '\0') {
            int fd = openat(folder, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
                            (mode_t)(mode & 0777));
            if (fd < 0)
                return fail(FAILED, "cannot create a file", strerror(errno));
            status = take(r, (size_t)length, fd, NULL);
            if (status != 0)
                return take_failed(r, status, "it ends inside a file");
            if (close(fd) != 0)
                return fail(FAILED, "cannot write a file", strerror(errno));
        } else if (kind == '2') {
            snprintf(target, sizeof target, "%.*s", (int)strnlen((const char *)header + 157, 100),
                     (const char *)header + 157);
            if (symlinkat(target, folder, name) != 0)
                return fail(FAILED, "cannot create a symbolic link", strerror(errno));
        } else {
            return fail(DAMAGED, "the program archive holds an entry of an unknown kind", name);
        }
        if (kind != '0' && kind != '\0')
            padding = 0; /* only a regular file's data follows its header */
        status = take(r, padding, -1, NULL);
        if (status != 0)
            return take_failed(r, status, "it ends inside a file");
    }
}
