/* lockship-launch: the first program of a Windows installer (.exe).
 *
 * A win-64 installer is [this program][zstd frames][stub pack trailer][payload] (see
 * builder/stubs/pack.py and docs/payload-format.md). The frames hold a ustar archive of the
 * one-folder installer program, every name under "stub/". This program
 *
 *   1. finds the frames right after its own PE image (the end of its last section) and the
 *      trailer after them, which must name the same sizes;
 *   2. makes a new folder lockship-XXXXXXXX in %LOCALAPPDATA% (the default prefix's folder; a
 *      relaunch next to another prefix points LOCALAPPDATA there, see stub/windows.py), else in
 *      the temporary folder;
 *   3. decodes the frames on one thread per CPU (at most 8) and writes each file as soon as the
 *      frames holding it are decoded;
 *   4. runs stub\lockship-stub.exe with this program's own command line (the arguments as they
 *      were typed), this console and these handles, and _LOCKSHIP_INSTALLER naming this file;
 *   5. waits for it, removes the folder and exits with the program's exit code.
 *
 * Ctrl+C reaches both processes; this one ignores it and waits for the program, which decides.
 * Failures before the program starts print one line on stderr and exit 1. Making, filling and
 * removing the folder is lockship-folder.c's; killed outright, this program leaves its folder to
 * the next installer's launcher, which removes it once neither this program nor its program
 * holds its .lock. */
#define WIN32_LEAN_AND_MEAN
#ifndef UNICODE
#define UNICODE
#endif
#include <windows.h>

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <wchar.h>

#include "lockship-launch.h"
#include "zstd.h"

#define MAGIC "LSSTUBPK"
#define FORMAT 1
#define TRAILER_SIZE 32
#define MAX_FRAMES 64
#define MAX_THREADS 8
#define PROGRAM L"stub\\lockship-stub.exe"

struct frame {
    const unsigned char *in;
    size_t in_size;
    size_t out_offset, out_size;
    HANDLE done; /* set when decoded (or not) */
    volatile LONG ok;
};

static struct frame frames[MAX_FRAMES];
static size_t frame_count;
unsigned char *out; /* the whole archive, decoded frame by frame */
static volatile LONG next_frame;
static size_t ready_end, ready_frames; /* the main thread's view: bytes known decoded */
wchar_t *folder; /* the program's folder */

wchar_t *new_path(void)
{
    return HeapAlloc(GetProcessHeap(), HEAP_ZERO_MEMORY, LONG_PATH * sizeof(wchar_t));
}

void free_path(wchar_t *path)
{
    HeapFree(GetProcessHeap(), 0, path);
}

int fail(const char *what, const wchar_t *detail)
{
    if (detail)
        fprintf(stderr, "ERROR: %s: %ls\n", what, detail);
    else
        fprintf(stderr, "ERROR: %s\n", what);
    return 1;
}

int damaged(const wchar_t *self, const char *why)
{
    fprintf(stderr, "ERROR: the installer file %ls is damaged (%s); download it again\n", self,
            why);
    return 1;
}

const wchar_t *last_error(void)
{
    static wchar_t message[512];
    DWORD n = FormatMessageW(FORMAT_MESSAGE_FROM_SYSTEM | FORMAT_MESSAGE_IGNORE_INSERTS, NULL,
                             GetLastError(), 0, message, 512, NULL);
    while (n > 0 && (message[n - 1] == L'\n' || message[n - 1] == L'\r' || message[n - 1] == L'.'))
        message[--n] = 0;
    if (n == 0)
        swprintf(message, 512, L"error %lu", GetLastError());
    return message;
}

static uint64_t le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* where the PE image in ``data`` ends: the end of its furthest section; 0 if it is no PE */
static size_t pe_end(const unsigned char *data, size_t size)
{
    if (size < 0x40 || data[0] != 'M' || data[1] != 'Z')
        return 0;
    size_t nt = (size_t)(data[0x3c] | data[0x3d] << 8 | data[0x3e] << 16 | (uint32_t)data[0x3f] << 24);
    if (nt > size - 24 || memcmp(data + nt, "PE\0\0", 4) != 0)
        return 0;
    size_t sections = (size_t)(data[nt + 6] | data[nt + 7] << 8);
    size_t optional = (size_t)(data[nt + 20] | data[nt + 21] << 8);
    size_t table = nt + 24 + optional, end = 0;
    if (table + sections * 40 > size)
        return 0;
    for (size_t i = 0; i < sections; i++) {
        const unsigned char *s = data + table + i * 40;
        uint32_t raw_size = (uint32_t)(s[16] | s[17] << 8 | s[18] << 16 | (uint32_t)s[19] << 24);
        uint32_t raw_at = (uint32_t)(s[20] | s[21] << 8 | s[22] << 16 | (uint32_t)s[23] << 24);
        if (raw_size && (size_t)raw_at + raw_size > end)
            end = (size_t)raw_at + raw_size;
    }
    return end <= size ? end : 0;
}

/* the frames from ``at`` up to the trailer; NULL or what is wrong */
static const char *find_frames(const unsigned char *data, size_t size, size_t at)
{
    size_t position = at, total = 0;
    while (position + TRAILER_SIZE <= size && memcmp(data + position, MAGIC, 8) != 0) {
        if (frame_count == MAX_FRAMES)
            return "too many frames";
        size_t in_size = ZSTD_findFrameCompressedSize(data + position, size - position);
        if (ZSTD_isError(in_size))
            return "a frame of its program is cut short";
        unsigned long long out_size = ZSTD_getFrameContentSize(data + position, in_size);
        if (out_size == ZSTD_CONTENTSIZE_UNKNOWN || out_size == ZSTD_CONTENTSIZE_ERROR ||
            out_size > SIZE_MAX - total)
            return "a frame of its program has no size";
        struct frame *f = &frames[frame_count++];
        f->in = data + position;
        f->in_size = in_size;
        f->out_offset = total;
        f->out_size = (size_t)out_size;
        total += (size_t)out_size;
        position += in_size;
    }
    if (position + TRAILER_SIZE > size || frame_count == 0)
        return "its program has no stub pack trailer";
    const unsigned char *trailer = data + position;
    if (le64(trailer + 8) != at || le64(trailer + 16) != position - at || le64(trailer + 24) != FORMAT)
        return "its stub pack trailer does not match its program";
    return NULL;
}

static DWORD WINAPI decode_frames(LPVOID unused)
{
    (void)unused;
    ZSTD_DCtx *context = ZSTD_createDCtx();
    for (;;) {
        LONG i = InterlockedIncrement(&next_frame) - 1;
        if ((size_t)i >= frame_count)
            break;
        struct frame *f = &frames[i];
        size_t n = context ? ZSTD_decompressDCtx(context, out + f->out_offset, f->out_size,
                                                 f->in, f->in_size)
                           : 0;
        InterlockedExchange(&f->ok, context && !ZSTD_isError(n) && n == f->out_size);
        SetEvent(f->done);
    }
    ZSTD_freeDCtx(context);
    return 0;
}

size_t archive_size(void)
{
    return frames[frame_count - 1].out_offset + frames[frame_count - 1].out_size;
}

int decoded_to(size_t end)
{
    while (ready_end < end && ready_frames < frame_count) {
        struct frame *f = &frames[ready_frames];
        WaitForSingleObject(f->done, INFINITE);
        if (!f->ok)
            return 0;
        ready_end += f->out_size;
        ready_frames++;
    }
    return ready_end >= end;
}

static BOOL WINAPI on_console_event(DWORD event)
{
    return event == CTRL_C_EVENT || event == CTRL_BREAK_EVENT; /* the program decides */
}

/* this process's command line after its program's name, as it was typed */
static const wchar_t *arguments(void)
{
    const wchar_t *line = GetCommandLineW();
    if (*line == L'"') {
        line++;
        while (*line && *line != L'"')
            line++;
        if (*line)
            line++;
    } else {
        while (*line && *line != L' ' && *line != L'\t')
            line++;
    }
    return line;
}

static int run_program(const wchar_t *self, const wchar_t *name, wchar_t *program, wchar_t *line)
{
    swprintf(program, LONG_PATH, L"%ls\\%ls", folder, PROGRAM);
    if (swprintf(line, LONG_PATH, L"\"%ls\"%ls", program, arguments()) < 0)
        return fail("the command line is too long", NULL);
    SetEnvironmentVariableW(L"_LOCKSHIP_INSTALLER", self);
    SetEnvironmentVariableW(L"_LOCKSHIP_PROG", name);
    SetEnvironmentVariableW(L"_LOCKSHIP_UNPACKED_DIR", NULL); /* this program removes it */
    /* the program is a one-folder PyInstaller program: it must not take _PYI_* variables
     * of a frozen parent (a relaunch) for its own */
    SetEnvironmentVariableW(L"PYINSTALLER_RESET_ENVIRONMENT", L"1");
    STARTUPINFOW startup;
    PROCESS_INFORMATION process;
    GetStartupInfoW(&startup);
    if (!CreateProcessW(program, line, NULL, NULL, TRUE, 0, NULL, NULL, &startup, &process))
        return fail("cannot start the installer's program", last_error());
    CloseHandle(process.hThread);
    WaitForSingleObject(process.hProcess, INFINITE);
    DWORD code = 1;
    GetExitCodeProcess(process.hProcess, &code);
    CloseHandle(process.hProcess);
    return (int)code;
}

int wmain(int argc, wchar_t **argv)
{
    wchar_t *self = new_path(), *path = new_path(), *line = new_path();
    folder = new_path();
    if (!self || !path || !line || !folder)
        return fail("not enough memory to start the installer", NULL);
    DWORD n = GetModuleFileNameW(NULL, self, LONG_PATH);
    if (n == 0 || n >= LONG_PATH)
        return fail("cannot find the installer file", NULL);
    const wchar_t *name = argc > 0 ? argv[0] : self;
    for (const wchar_t *c = name; *c; c++)
        if (*c == L'\\' || *c == L'/')
            name = c + 1;
    HANDLE file = CreateFileW(self, GENERIC_READ, FILE_SHARE_READ | FILE_SHARE_DELETE, NULL,
                              OPEN_EXISTING, FILE_ATTRIBUTE_NORMAL, NULL);
    LARGE_INTEGER size;
    if (file == INVALID_HANDLE_VALUE || !GetFileSizeEx(file, &size))
        return fail("cannot read the installer file", last_error());
    HANDLE mapping = CreateFileMappingW(file, NULL, PAGE_READONLY, 0, 0, NULL);
    const unsigned char *data =
        mapping ? (const unsigned char *)MapViewOfFile(mapping, FILE_MAP_READ, 0, 0, 0) : NULL;
    if (!data)
        return fail("cannot read the installer file", last_error());
    size_t start = pe_end(data, (size_t)size.QuadPart);
    if (start == 0)
        return damaged(self, "it is not a Windows program");
    const char *problem = find_frames(data, (size_t)size.QuadPart, start);
    if (problem)
        return damaged(self, problem);
    out = VirtualAlloc(NULL, archive_size(), MEM_COMMIT | MEM_RESERVE, PAGE_READWRITE);
    if (!out)
        return fail("not enough memory to unpack the installer's program", last_error());
    if (make_folder(path))
        return 1;
    SYSTEM_INFO system;
    GetSystemInfo(&system);
    size_t threads = system.dwNumberOfProcessors;
    threads = threads < 1 ? 1 : threads > MAX_THREADS ? MAX_THREADS : threads;
    threads = threads > frame_count ? frame_count : threads;
    HANDLE workers[MAX_THREADS];
    size_t started = 0;
    for (size_t i = 0; i < frame_count; i++)
        if (!(frames[i].done = CreateEventW(NULL, TRUE, FALSE, NULL)))
            return fail("cannot unpack the installer's program", last_error());
    while (started < threads &&
           (workers[started] = CreateThread(NULL, 0, decode_frames, NULL, 0, NULL)) != NULL)
        started++;
    if (started == 0)
        decode_frames(NULL); /* no thread to spare: decode all of it here first */
    int status = extract(self, path);
    InterlockedExchange(&next_frame, (LONG)frame_count); /* no more frames after a failure */
    if (started > 0)
        WaitForMultipleObjects((DWORD)started, workers, TRUE, INFINITE);
    VirtualFree(out, 0, MEM_RELEASE);
    UnmapViewOfFile(data);
    CloseHandle(mapping);
    CloseHandle(file);
    if (status == 0) {
        SetConsoleCtrlHandler(on_console_event, TRUE);
        status = run_program(self, name, path, line);
    }
    remove_folder();
    return status;
}
