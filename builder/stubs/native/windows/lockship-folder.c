/* lockship-launch's folder: made in %LOCALAPPDATA%, filled from the decoded ustar archive of
 * the program, removed after the program (see lockship-launch.c). */
#define WIN32_LEAN_AND_MEAN
#ifndef UNICODE
#define UNICODE
#endif
#include <windows.h>

#include <stdio.h>
#include <string.h>
#include <wchar.h>

#include "lockship-launch.h"

static size_t octal(const unsigned char *field, size_t width)
{
    size_t v = 0;
    for (size_t i = 0; i < width && field[i] >= '0' && field[i] <= '7'; i++)
        v = v * 8 + (size_t)(field[i] - '0');
    return v;
}

static int header_ok(const unsigned char *h)
{
    size_t sum = 0;
    for (size_t i = 0; i < 512; i++)
        sum += (i >= 148 && i < 156) ? ' ' : h[i];
    return memcmp(h + 257, "ustar", 5) == 0 && octal(h + 148, 8) == sum;
}

/* ``folder``\``name`` (name with / separators) into ``path``; 0 if it is not a safe name */
static int target_path(const unsigned char *h, wchar_t *path)
{
    char name[260];
    size_t prefix_len = strnlen((const char *)h + 345, 155), name_len = strnlen((const char *)h, 100);
    if (prefix_len) {
        memcpy(name, h + 345, prefix_len);
        name[prefix_len] = '/';
        prefix_len++;
    }
    memcpy(name + prefix_len, h, name_len);
    name[prefix_len + name_len] = 0;
    if (strncmp(name, "stub", 4) != 0 || (name[4] != 0 && name[4] != '/') || strstr(name, "..") ||
        strchr(name, '\\') || strchr(name, ':'))
        return 0;
    for (char *c = name; *c; c++)
        if (*c == '/')
            *c = '\\';
    size_t used = wcslen(folder);
    wcscpy(path, folder);
    path[used++] = L'\\';
    return MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, name, -1, path + used,
                               (int)(LONG_PATH - used)) > 0;
}

static int write_file(const wchar_t *path, const unsigned char *data, size_t size)
{
    HANDLE file = CreateFileW(path, GENERIC_WRITE, 0, NULL, CREATE_NEW, FILE_ATTRIBUTE_NORMAL, NULL);
    if (file == INVALID_HANDLE_VALUE)
        return 0;
    while (size > 0) {
        DWORD step = size > (1u << 30) ? (1u << 30) : (DWORD)size, written = 0;
        if (!WriteFile(file, data, step, &written, NULL) || written == 0) {
            DWORD error = GetLastError();
            CloseHandle(file);
            SetLastError(error);
            return 0;
        }
        data += written;
        size -= written;
    }
    return CloseHandle(file) != 0;
}

/* extract the archive into ``folder``; 0, or 1 after saying why */
int extract(const wchar_t *self, wchar_t *path)
{
    size_t total = archive_size();
    size_t at = 0;
    for (;;) {
        if (!decoded_to(at + 512))
            return damaged(self, "a frame of its program does not decode");
        const unsigned char *h = out + at;
        if (h[0] == 0)
            return 0; /* the archive's end */
        if (!header_ok(h))
            return damaged(self, "its program's archive is broken");
        size_t size = octal(h + 124, 12), stored = (size + 511) / 512 * 512;
        if (stored > total - at - 512)
            return damaged(self, "its program's archive ends early");
        if (!target_path(h, path))
            return damaged(self, "its program's archive names a file outside its folder");
        if (h[156] == '5') {
            if (!CreateDirectoryW(path, NULL) && GetLastError() != ERROR_ALREADY_EXISTS)
                return fail("cannot create a folder of the installer's program", last_error());
        } else if (h[156] == '0' || h[156] == 0) {
            if (!decoded_to(at + 512 + size))
                return damaged(self, "a frame of its program does not decode");
            if (!write_file(path, h + 512, size))
                return fail("cannot write the installer's program", last_error());
        } else {
            return damaged(self, "its program's archive holds a link or device");
        }
        at += 512 + stored;
    }
}

/* ``each(path, entry)`` for the entries of ``dir`` that match ``name`` (a pattern), but . and .. */
static void each_entry(const wchar_t *dir, const wchar_t *name,
                       void (*each)(const wchar_t *, const WIN32_FIND_DATAW *))
{
    wchar_t *pattern = new_path(), *child = new_path();
    WIN32_FIND_DATAW found;
    HANDLE search = INVALID_HANDLE_VALUE;
    if (pattern && child && swprintf(pattern, LONG_PATH, L"%ls\\%ls", dir, name) > 0)
        search = FindFirstFileW(pattern, &found);
    if (search != INVALID_HANDLE_VALUE) {
        do {
            if (wcscmp(found.cFileName, L".") != 0 && wcscmp(found.cFileName, L"..") != 0 &&
                swprintf(child, LONG_PATH, L"%ls\\%ls", dir, found.cFileName) > 0)
                each(child, &found);
        } while (FindNextFileW(search, &found));
        FindClose(search);
    }
    free_path(pattern);
    free_path(child);
}

static void remove_tree(const wchar_t *path);

static void remove_entry(const wchar_t *path, const WIN32_FIND_DATAW *found)
{
    if (found->dwFileAttributes & FILE_ATTRIBUTE_REPARSE_POINT) {
        /* a link: remove it, never what it points to */
        if (!RemoveDirectoryW(path))
            DeleteFileW(path);
    } else if (found->dwFileAttributes & FILE_ATTRIBUTE_DIRECTORY) {
        remove_tree(path);
    } else {
        SetFileAttributesW(path, FILE_ATTRIBUTE_NORMAL);
        DeleteFileW(path);
    }
}

static void remove_tree(const wchar_t *path)
{
    each_entry(path, L"*", remove_entry);
    RemoveDirectoryW(path);
}

/* whether ``name`` is a launcher's folder's: lockship- and 8 hexadecimal digits */
static int launcher_folder_name(const wchar_t *name)
{
    if (wcsncmp(name, L"lockship-", 9) != 0 || wcslen(name) != 17)
        return 0;
    for (const wchar_t *c = name + 9; *c; c++)
        if (!((*c >= L'0' && *c <= L'9') || (*c >= L'a' && *c <= L'f')))
            return 0;
    return 1;
}

/* A launcher's folder that no process holds is an installer's killed outright: remove it. A
 * running installer's launcher and program hold its .lock open without sharing (the program
 * inherits the handle), so deleting that file fails while either runs; a folder without one is
 * being made right now, or is not a launcher's. */
static void remove_if_stale(const wchar_t *path, const WIN32_FIND_DATAW *found)
{
    int is_folder = (found->dwFileAttributes & FILE_ATTRIBUTE_DIRECTORY) &&
                    !(found->dwFileAttributes & FILE_ATTRIBUTE_REPARSE_POINT);
    if (!is_folder || !launcher_folder_name(found->cFileName) || wcscmp(path, folder) == 0)
        return;
    wchar_t *lock = new_path();
    if (lock && swprintf(lock, LONG_PATH, L"%ls\\.lock", path) > 0 && DeleteFileW(lock))
        remove_tree(path);
    free_path(lock);
}

static HANDLE lock_file = INVALID_HANDLE_VALUE;

/* open ``folder``\.lock without sharing, for this process and the program; 0 or 1 */
static int hold_folder(void)
{
    wchar_t *lock = new_path();
    SECURITY_ATTRIBUTES inherited = {sizeof inherited, NULL, TRUE};
    if (lock && swprintf(lock, LONG_PATH, L"%ls\\.lock", folder) > 0)
        lock_file = CreateFileW(lock, GENERIC_WRITE, 0, &inherited, CREATE_NEW,
                                FILE_ATTRIBUTE_NORMAL, NULL);
    free_path(lock);
    if (lock_file == INVALID_HANDLE_VALUE)
        return fail("cannot create a folder for the installer's program", last_error());
    return 0;
}

/* a new folder lockship-XXXXXXXX in %LOCALAPPDATA% (else the temporary folder) */
int make_folder(wchar_t *base)
{
    DWORD n = GetEnvironmentVariableW(L"LOCALAPPDATA", base, LONG_PATH);
    if (n == 0 || n >= LONG_PATH - 32) {
        n = GetTempPathW(LONG_PATH, base);
        if (n == 0 || n >= LONG_PATH - 32)
            return fail("no folder to unpack the installer's program into: set LOCALAPPDATA", NULL);
    }
    while (n > 0 && (base[n - 1] == L'\\' || base[n - 1] == L'/'))
        base[--n] = 0;
    CreateDirectoryW(base, NULL); /* a relaunch's or a new profile's: made if missing */
    LARGE_INTEGER counter;
    QueryPerformanceCounter(&counter);
    unsigned seed = (unsigned)(counter.QuadPart ^ ((LONGLONG)GetCurrentProcessId() << 16));
    for (int attempt = 0; attempt < 100; attempt++) {
        seed = seed * 1103515245u + 12345u;
        swprintf(folder, LONG_PATH, L"%ls\\lockship-%08x", base, seed);
        if (CreateDirectoryW(folder, NULL)) {
            if (hold_folder())
                return 1;
            each_entry(base, L"lockship-*", remove_if_stale);
            return 0;
        }
        if (GetLastError() != ERROR_ALREADY_EXISTS)
            return fail("cannot create a folder for the installer's program", last_error());
    }
    return fail("cannot create a folder for the installer's program", base);
}


/* the program's folder goes; a scanner may hold a file for a moment after the program ends */
void remove_folder(void)
{
    if (lock_file != INVALID_HANDLE_VALUE)
        CloseHandle(lock_file);
    lock_file = INVALID_HANDLE_VALUE;
    for (int attempt = 0; attempt < 20; attempt++) {
        remove_tree(folder);
        if (GetFileAttributesW(folder) == INVALID_FILE_ATTRIBUTES)
            return;
        Sleep(50);
    }
}
