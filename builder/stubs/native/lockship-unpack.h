/* What the unpacker's parts (lockship-unpack.c, lockship-tar.c, lockship-sweep.c) share. */
#ifndef LOCKSHIP_UNPACK_H
#define LOCKSHIP_UNPACK_H

#include <stddef.h>

/* exit statuses (see lockship-unpack.c) */
#define DAMAGED 2
#define FAILED 1
#define NO_ROOM_IN_MEMORY 3 /* within the program only; exits as FAILED */

/* lockship-unpack.c: the archive as one stream over the decoded frames */
struct reader;
/* pass ``size`` bytes of the archive to ``fd`` (-1: skip them, or copy them to ``copy``);
 * 0, DAMAGED (a frame does not decode, or the archive ends first), FAILED (writing: errno
 * says why) or NO_ROOM_IN_MEMORY */
int take(struct reader *r, size_t size, int fd, unsigned char *copy);
/* the line for a take() that failed ``where`` in the archive, and the exit status */
int take_failed(const struct reader *r, int status, const char *where);
/* one line on stderr; returns ``status`` */
int fail(int status, const char *what, const char *detail);

/* lockship-tar.c: extract the archive into the folder ``folder``; 0 or an exit status */
int extract(struct reader *r, int folder);

/* lockship-sweep.c */
/* 0 if this process now holds the folder's lock (the header's open .lock, ``lock_fd``) */
int lock_folder(int lock_fd);
/* remove the sibling folders of installers killed outright */
void sweep_stale_folders(int folder);

#endif
