/* What lockship-launch.c and lockship-folder.c share. */
#ifndef LOCKSHIP_LAUNCH_H
#define LOCKSHIP_LAUNCH_H

#include <stddef.h>
#include <wchar.h>

#define LONG_PATH 32768

/* lockship-launch.c */
/* the decoded archive (archive_size() bytes, decoded up to what decoded_to() says) */
extern unsigned char *out;
size_t archive_size(void);
/* wait until the first ``end`` bytes of the archive are decoded; 0 if a frame is broken */
int decoded_to(size_t end);
/* the program's folder (make_folder fills it in) */
extern wchar_t *folder;
/* a buffer for a path of up to LONG_PATH characters (on the heap: 64 kB each); NULL if no
 * memory is left */
wchar_t *new_path(void);
void free_path(wchar_t *path);
/* one line on stderr; returns the exit status 1 */
int fail(const char *what, const wchar_t *detail);
int damaged(const wchar_t *self, const char *why);
/* the system's message for GetLastError() */
const wchar_t *last_error(void);

/* lockship-folder.c */
/* a new folder lockship-XXXXXXXX in %LOCALAPPDATA% (else the temporary folder), in ``folder``,
 * held by its .lock, and the folders of installers killed outright gone; ``base`` is a path
 * buffer to use; 0 or 1 after saying why */
int make_folder(wchar_t *base);
/* extract the archive into ``folder``; 0, or 1 after saying why */
int extract(const wchar_t *self, wchar_t *path);
/* let go of ``folder`` and remove it and everything in it, trying again for a second */
void remove_folder(void);

#endif
