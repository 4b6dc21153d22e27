/* lockship-unpack's second part: removing the folders of installers killed outright.
 *
 * The shell header opens FOLDER/.lock and keeps it open while it runs the unpacker and then the
 * program, which inherits it; the unpacker locks it (flock). The lock is held until the program
 * and every process it started are gone, however they end, and it is let go when they are. An
 * installer killed outright (SIGKILL) cannot remove its folder (~75 MB), so the next unpacker
 * run into a sibling folder removes every other lockship-XXXXXXXX folder of the same user whose
 * .lock nobody holds and that is older than STALE_SECONDS (the header makes the lock file a
 * moment before the unpacker locks it). Folders without a .lock (older lockship versions, or
 * anything else) are never touched, nor is anything a symbolic link points to.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lockship-unpack.h"

#define STALE_SECONDS 60
#define NAME_PREFIX "lockship-"
#define NAME_LENGTH (sizeof NAME_PREFIX - 1 + 8) /* mktemp -d "$base/lockship-XXXXXXXX" */

int lock_folder(int lock_fd)
{
    return flock(lock_fd, LOCK_EX | LOCK_NB);
}

/* remove what the folder ``fd`` holds, and close it; links are removed, never followed, and
 * nothing on another file system (a mount inside) is entered */
static void remove_contents(int fd, dev_t device)
{
    DIR *dir = fdopendir(fd);
    if (dir == NULL) {
        close(fd);
        return;
    }
    struct dirent *entry;
    while ((entry = readdir(dir)) != NULL) {
        const char *name = entry->d_name;
        if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0 || unlinkat(fd, name, 0) == 0)
            continue;
        int sub = openat(fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        struct stat inside;
        if (sub < 0)
            continue;
        if (fstat(sub, &inside) != 0 || inside.st_dev != device) {
            close(sub);
            continue;
        }
        remove_contents(sub, device);
        unlinkat(fd, name, AT_REMOVEDIR);
    }
    closedir(dir);
}

/* whether ``name`` in ``parent`` is a stale folder: then it is removed */
static void sweep_one(int parent, const char *name, const struct stat *own, time_t now)
{
    int folder = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (folder < 0)
        return;
    struct stat seen;
    if (fstat(folder, &seen) != 0 || seen.st_uid != geteuid() ||
        (seen.st_dev == own->st_dev && seen.st_ino == own->st_ino)) {
        close(folder);
        return;
    }
    int lock = openat(folder, ".lock", O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    struct stat locked;
    if (lock < 0 || fstat(lock, &locked) != 0 || !S_ISREG(locked.st_mode) ||
        now - locked.st_mtime < STALE_SECONDS || lock_folder(lock) != 0) {
        if (lock >= 0)
            close(lock);
        close(folder);
        return;
    }
    remove_contents(folder, seen.st_dev); /* the lock stays held: no other sweep starts on it */
    unlinkat(parent, name, AT_REMOVEDIR);
    close(lock);
}

/* remove the stale sibling folders of ``folder`` (this run's own, locked); best effort */
void sweep_stale_folders(int folder)
{
    struct stat own;
    int parent = openat(folder, "..", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (parent < 0 || fstat(folder, &own) != 0) {
        if (parent >= 0)
            close(parent);
        return;
    }
    DIR *dir = fdopendir(parent); /* it owns ``parent`` now, which openat may still use */
    if (dir == NULL) {
        close(parent);
        return;
    }
    time_t now = time(NULL);
    struct dirent *entry;
    while ((entry = readdir(dir)) != NULL)
        if (strlen(entry->d_name) == NAME_LENGTH &&
            strncmp(entry->d_name, NAME_PREFIX, sizeof NAME_PREFIX - 1) == 0)
            sweep_one(parent, entry->d_name, &own, now);
    closedir(dir);
}
