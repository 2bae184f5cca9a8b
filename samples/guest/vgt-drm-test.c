/*
 * vgt-drm-test: a small fbdev/DRM client that the vgt test guest runs to make its virtio-gpu
 * driver send known traffic. Static, kernel uapi headers only (no libdrm).
 *
 *   vgt-drm-test fb                    FB_FRAMES full-screen writes to /dev/fb0
 *   vgt-drm-test modes  [--ready FILE] modeset every connected scanout, change the resolution
 *                                      of scanout 0, page-flip between two buffers
 *   vgt-drm-test cursor [--ready FILE] modeset scanout 0, set a 64x64 ARGB cursor, move it,
 *                                      change its image, move it again
 *
 * With --ready FILE the program creates FILE when its work is done and then waits for a signal
 * with the DRM file still open, so that its last frame stays on screen (closing the last DRM
 * file hands the display back to the kernel's fbdev console).
 *
 * Patterns (samples/guest/check-fb.py recomputes them; keep both in step). Pixels are
 * XRGB8888 / ARGB8888 in memory order B, G, R, X/A.
 *   fb frame f (0 .. FB_FRAMES-1), pixel (x, y):
 *     R = (x + 4f) & 255, G = (y + 2f) & 255, B = ((x/32 + y/32 + f) & 1) ? 255 : 0
 *   DRM buffer for scanout s, variant v, size w x h:
 *     s+1 white 32x32 squares at x = 16 + 48k, y = 16 (k = 0..s), elsewhere
 *     R = x*255/(w-1), G = y*255/(h-1), B = v ? 255 : 0
 *   cursor image c (0 or 1), 64x64, hotspot (2, 3):
 *     x < 2 or y < 2: opaque white; else x + y < 64: A = 255, R = 4x, G = 4y, B = c ? 255 : 128;
 *     else fully transparent (0)
 */
#define _GNU_SOURCE
#include <drm/drm.h>
#include <drm/drm_mode.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#define FB_FRAMES 50
#define MAX_OUTPUTS 16
#define MAX_MODES 256
#define CURSOR_SIZE 64

/* Stop with one line on stderr; die_sys appends the error of the failed system call. */
static void vdie(int err, const char *fmt, va_list ap)
{
	fprintf(stderr, "vgt-drm-test: error: ");
	vfprintf(stderr, fmt, ap);
	if (err)
		fprintf(stderr, ": %s", strerror(err));
	fprintf(stderr, "\n");
	exit(1);
}

static void die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vdie(0, fmt, ap);
}

static void die_sys(const char *fmt, ...)
{
	va_list ap;
	int err = errno;

	va_start(ap, fmt);
	vdie(err, fmt, ap);
}

static void say(const char *fmt, ...)
{
	va_list ap;

	printf("vgt-drm-test: ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
}

/* ioctl that retries on EINTR/EAGAIN and stops the program on any other error. */
static void xioctl(int fd, unsigned long request, void *arg, const char *name)
{
	int ret;

	do {
		ret = ioctl(fd, request, arg);
	} while (ret == -1 && (errno == EINTR || errno == EAGAIN));
	if (ret == -1)
		die_sys("%s", name);
}

static uint32_t xrgb(uint32_t r, uint32_t g, uint32_t b)
{
	return 0xff000000u | (r & 255) << 16 | (g & 255) << 8 | (b & 255);
}

/* ---- fb: plain writes to /dev/fb0 --------------------------------------------------------- */

static uint32_t fb_pixel(unsigned f, unsigned x, unsigned y)
{
	return xrgb(x + 4 * f, y + 2 * f, ((x / 32 + y / 32 + f) & 1) ? 255 : 0);
}

static int run_fb(void)
{
	struct fb_var_screeninfo var;
	struct fb_fix_screeninfo fix;
	int fd = open("/dev/fb0", O_RDWR | O_CLOEXEC);

	if (fd < 0)
		die_sys("open /dev/fb0");
	xioctl(fd, FBIOGET_VSCREENINFO, &var, "FBIOGET_VSCREENINFO");
	xioctl(fd, FBIOGET_FSCREENINFO, &fix, "FBIOGET_FSCREENINFO");
	if (var.bits_per_pixel != 32 || var.red.offset != 16 || var.green.offset != 8 ||
	    var.blue.offset != 0)
		die("/dev/fb0 is %u bpp with red at bit %u, not XRGB8888", var.bits_per_pixel,
		    var.red.offset);

	size_t size = (size_t)fix.line_length * var.yres;
	uint8_t *frame = malloc(size);
	if (!frame)
		die_sys("malloc %zu", size);
	for (unsigned f = 0; f < FB_FRAMES; f++) {
		for (unsigned y = 0; y < var.yres; y++) {
			uint32_t *row = (uint32_t *)(frame + (size_t)y * fix.line_length);
			for (unsigned x = 0; x < fix.line_length / 4; x++)
				row[x] = fb_pixel(f, x, y);
		}
		for (size_t done = 0; done < size;) {
			ssize_t n = pwrite(fd, frame + done, size - done, done);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				die_sys("write frame %u to /dev/fb0 at %zu", f, done);
			done += n;
		}
		usleep(20000); /* let the damage worker flush most frames on their own */
	}
	say("fb: %ux%u, line length %u: wrote %d frames of %zu bytes; the last is frame %d",
	    var.xres, var.yres, fix.line_length, FB_FRAMES, size, FB_FRAMES - 1);
	free(frame);
	close(fd);
	return 0;
}

/* ---- DRM objects -------------------------------------------------------------------------- */

struct buffer {
	uint32_t handle, fb_id, width, height, pitch;
	uint64_t size;
	uint32_t *map;
};

struct output {
	uint32_t connector_id, crtc_id;
	unsigned scanout; /* index of the connector: virtio-gpu has one per scanout */
	unsigned nmodes;
	struct drm_mode_modeinfo modes[MAX_MODES];
	struct drm_mode_modeinfo *mode; /* the one to start with */
};

static void buffer_create(int fd, struct buffer *b, uint32_t width, uint32_t height)
{
	struct drm_mode_create_dumb create = { .width = width, .height = height, .bpp = 32 };
	struct drm_mode_fb_cmd fb = { 0 };
	struct drm_mode_map_dumb map = { 0 };

	xioctl(fd, DRM_IOCTL_MODE_CREATE_DUMB, &create, "DRM_IOCTL_MODE_CREATE_DUMB");
	fb.width = width;
	fb.height = height;
	fb.pitch = create.pitch;
	fb.bpp = 32;
	fb.depth = 24;
	fb.handle = create.handle;
	xioctl(fd, DRM_IOCTL_MODE_ADDFB, &fb, "DRM_IOCTL_MODE_ADDFB");
	map.handle = create.handle;
	xioctl(fd, DRM_IOCTL_MODE_MAP_DUMB, &map, "DRM_IOCTL_MODE_MAP_DUMB");
	void *p = mmap(NULL, create.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, map.offset);
	if (p == MAP_FAILED)
		die_sys("mmap dumb buffer %u", create.handle);
	*b = (struct buffer){ create.handle, fb.fb_id, width, height, create.pitch, create.size, p };
}

static void draw_pattern(struct buffer *b, unsigned scanout, unsigned variant)
{
	for (uint32_t y = 0; y < b->height; y++) {
		uint32_t *row = b->map + (size_t)y * (b->pitch / 4);
		for (uint32_t x = 0; x < b->width; x++) {
			int in_square = y >= 16 && y < 48 && x >= 16 && (x - 16) % 48 < 32 &&
					(x - 16) / 48 <= scanout;
			row[x] = in_square ? xrgb(255, 255, 255) :
					     xrgb(x * 255 / (b->width - 1), y * 255 / (b->height - 1),
						  variant ? 255 : 0);
		}
	}
}

/* The mode given on the kernel command line (video=...), else the preferred one, else the first. */
static struct drm_mode_modeinfo *start_mode(struct output *o)
{
	for (unsigned i = 0; i < o->nmodes; i++)
		if (o->modes[i].type & DRM_MODE_TYPE_USERDEF)
			return &o->modes[i];
	for (unsigned i = 0; i < o->nmodes; i++)
		if (o->modes[i].type & DRM_MODE_TYPE_PREFERRED)
			return &o->modes[i];
	return &o->modes[0];
}

static unsigned find_outputs(int fd, struct output *out)
{
	struct drm_mode_card_res res = { 0 };
	uint32_t connectors[MAX_OUTPUTS], crtcs[MAX_OUTPUTS], used_crtcs = 0;
	unsigned n = 0;

	xioctl(fd, DRM_IOCTL_MODE_GETRESOURCES, &res, "DRM_IOCTL_MODE_GETRESOURCES");
	if (res.count_connectors > MAX_OUTPUTS || res.count_crtcs > MAX_OUTPUTS)
		die("%u connectors, %u CRTCs: more than %d", res.count_connectors, res.count_crtcs,
		    MAX_OUTPUTS);
	res.connector_id_ptr = (uintptr_t)connectors;
	res.crtc_id_ptr = (uintptr_t)crtcs;
	res.count_fbs = res.count_encoders = 0;
	xioctl(fd, DRM_IOCTL_MODE_GETRESOURCES, &res, "DRM_IOCTL_MODE_GETRESOURCES");

	for (unsigned i = 0; i < res.count_connectors; i++) {
		struct drm_mode_get_connector conn = { .connector_id = connectors[i] };
		struct drm_mode_get_encoder enc = { 0 };
		struct output *o = &out[n];
		uint32_t encoders[MAX_OUTPUTS];

		/* The first call (count_modes 0) probes the connector and returns the counts. */
		xioctl(fd, DRM_IOCTL_MODE_GETCONNECTOR, &conn, "DRM_IOCTL_MODE_GETCONNECTOR");
		if (conn.connection != 1 || conn.count_modes == 0 || conn.count_encoders == 0) {
			say("connector %u (scanout %u): not connected", connectors[i], i);
			continue;
		}
		if (conn.count_modes > MAX_MODES || conn.count_encoders > MAX_OUTPUTS)
			die("connector %u has %u modes, %u encoders", connectors[i],
			    conn.count_modes, conn.count_encoders);
		conn.modes_ptr = (uintptr_t)o->modes;
		conn.encoders_ptr = (uintptr_t)encoders;
		conn.count_props = 0;
		xioctl(fd, DRM_IOCTL_MODE_GETCONNECTOR, &conn, "DRM_IOCTL_MODE_GETCONNECTOR");
		o->nmodes = conn.count_modes;

		enc.encoder_id = conn.encoder_id ? conn.encoder_id : encoders[0];
		xioctl(fd, DRM_IOCTL_MODE_GETENCODER, &enc, "DRM_IOCTL_MODE_GETENCODER");
		o->crtc_id = 0;
		for (unsigned c = 0; c < res.count_crtcs; c++) {
			if ((enc.possible_crtcs & (1u << c)) && !(used_crtcs & (1u << c))) {
				used_crtcs |= 1u << c;
				o->crtc_id = crtcs[c];
				break;
			}
		}
		if (!o->crtc_id) {
			say("connector %u (scanout %u): no free CRTC", connectors[i], i);
			continue;
		}
		o->connector_id = connectors[i];
		o->scanout = i;
		o->mode = start_mode(o);
		say("connector %u (scanout %u): connected, %u modes, CRTC %u, starting with %s",
		    o->connector_id, i, o->nmodes, o->crtc_id, o->mode->name);

		n++;
	}
	if (n == 0)
		die("no connected connector");
	return n;
}

static void set_crtc(int fd, struct output *o, struct buffer *b, struct drm_mode_modeinfo *mode)
{
	struct drm_mode_crtc crtc = {
		.set_connectors_ptr = (uintptr_t)&o->connector_id,
		.count_connectors = 1,
		.crtc_id = o->crtc_id,
		.fb_id = b->fb_id,
		.mode_valid = 1,
		.mode = *mode,
	};

	xioctl(fd, DRM_IOCTL_MODE_SETCRTC, &crtc, "DRM_IOCTL_MODE_SETCRTC");
	say("scanout %u: SETCRTC %ux%u fb %u", o->scanout, mode->hdisplay, mode->vdisplay,
	    b->fb_id);
}

/* Page-flip CRTC of o to b and wait (at most 5 s) for the flip-complete event. */
static void page_flip(int fd, struct output *o, struct buffer *b)
{
	struct drm_mode_crtc_page_flip flip = {
		.crtc_id = o->crtc_id,
		.fb_id = b->fb_id,
		.flags = DRM_MODE_PAGE_FLIP_EVENT,
		.user_data = b->fb_id,
	};
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	char buf[256];

	xioctl(fd, DRM_IOCTL_MODE_PAGE_FLIP, &flip, "DRM_IOCTL_MODE_PAGE_FLIP");
	if (poll(&pfd, 1, 5000) != 1)
		die("no page-flip event within 5 s");
	ssize_t n = read(fd, buf, sizeof buf);
	struct drm_event ev;
	if (n < (ssize_t)sizeof ev)
		die_sys("read DRM event");
	memcpy(&ev, buf, sizeof ev);
	if (ev.type != DRM_EVENT_FLIP_COMPLETE)
		die("DRM event type %u, expected flip complete", ev.type);
	say("scanout %u: page flip to fb %u done", o->scanout, b->fb_id);
}

/* Pick a mode of o with another size than its starting one: 800x600 if offered. */
static struct drm_mode_modeinfo *second_mode(struct output *o)
{
	struct drm_mode_modeinfo *first = o->mode, *other = NULL;

	for (unsigned i = 0; i < o->nmodes; i++) {
		struct drm_mode_modeinfo *m = &o->modes[i];
		if (m->hdisplay == first->hdisplay && m->vdisplay == first->vdisplay)
			continue;
		if (m->hdisplay == 800 && m->vdisplay == 600)
			return m;
		if (!other)
			other = m;
	}
	if (!other)
		die("scanout %u offers only one size", o->scanout);
	return other;
}

static int run_modes(int fd)
{
	struct output out[MAX_OUTPUTS];
	struct buffer first[MAX_OUTPUTS], flip[2];
	unsigned n = find_outputs(fd, out);

	for (unsigned i = 0; i < n; i++) {
		struct drm_mode_modeinfo *m = out[i].mode;
		buffer_create(fd, &first[i], m->hdisplay, m->vdisplay);
		draw_pattern(&first[i], out[i].scanout, 0);
		set_crtc(fd, &out[i], &first[i], m);
	}

	struct drm_mode_modeinfo *m = second_mode(&out[0]);
	for (unsigned v = 0; v < 2; v++) {
		buffer_create(fd, &flip[v], m->hdisplay, m->vdisplay);
		draw_pattern(&flip[v], out[0].scanout, v);
	}
	set_crtc(fd, &out[0], &flip[0], m);
	page_flip(fd, &out[0], &flip[1]);
	page_flip(fd, &out[0], &flip[0]);
	page_flip(fd, &out[0], &flip[1]);

	say("final: scanout %u %ux%u variant 1", out[0].scanout, m->hdisplay, m->vdisplay);
	for (unsigned i = 1; i < n; i++)
		say("final: scanout %u %ux%u variant 0", out[i].scanout, first[i].width,
		    first[i].height);
	return 0;
}

/* ---- cursor ------------------------------------------------------------------------------- */

static void draw_cursor(struct buffer *b, unsigned image)
{
	for (uint32_t y = 0; y < CURSOR_SIZE; y++) {
		uint32_t *row = b->map + (size_t)y * (b->pitch / 4);
		for (uint32_t x = 0; x < CURSOR_SIZE; x++) {
			if (x < 2 || y < 2)
				row[x] = 0xffffffffu;
			else if (x + y < CURSOR_SIZE)
				row[x] = xrgb(4 * x, 4 * y, image ? 255 : 128);
			else
				row[x] = 0;
		}
	}
}

static void set_cursor(int fd, struct output *o, struct buffer *b, unsigned image)
{
	struct drm_mode_cursor2 cur = {
		.flags = DRM_MODE_CURSOR_BO,
		.crtc_id = o->crtc_id,
		.width = CURSOR_SIZE,
		.height = CURSOR_SIZE,
		.handle = b->handle,
		.hot_x = 2,
		.hot_y = 3,
	};

	xioctl(fd, DRM_IOCTL_MODE_CURSOR2, &cur, "DRM_IOCTL_MODE_CURSOR2");
	say("scanout %u: cursor image %u (handle %u, hotspot 2,3)", o->scanout, image, b->handle);
}

static void move_cursor(int fd, struct output *o, int x, int y)
{
	struct drm_mode_cursor cur = {
		.flags = DRM_MODE_CURSOR_MOVE, .crtc_id = o->crtc_id, .x = x, .y = y
	};

	xioctl(fd, DRM_IOCTL_MODE_CURSOR, &cur, "DRM_IOCTL_MODE_CURSOR");
	say("scanout %u: cursor at %d,%d", o->scanout, x, y);
	usleep(50000);
}

static int run_cursor(int fd)
{
	struct output out[MAX_OUTPUTS];
	struct buffer screen, cursor[2];

	find_outputs(fd, out);
	buffer_create(fd, &screen, out[0].mode->hdisplay, out[0].mode->vdisplay);
	draw_pattern(&screen, out[0].scanout, 0);
	set_crtc(fd, &out[0], &screen, out[0].mode);

	for (unsigned c = 0; c < 2; c++) {
		buffer_create(fd, &cursor[c], CURSOR_SIZE, CURSOR_SIZE);
		draw_cursor(&cursor[c], c);
	}
	set_cursor(fd, &out[0], &cursor[0], 0);
	for (int k = 0; k < 4; k++)
		move_cursor(fd, &out[0], 100 + 50 * k, 80 + 30 * k);
	set_cursor(fd, &out[0], &cursor[1], 1);
	for (int k = 4; k < 8; k++)
		move_cursor(fd, &out[0], 100 + 50 * k, 80 + 30 * k);
	return 0;
}

/* ---- main --------------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
	const char *ready = NULL;
	int fd, rc;

	if (argc == 4 && strcmp(argv[2], "--ready") == 0)
		ready = argv[3];
	else if (argc != 2) {
		fprintf(stderr, "usage: vgt-drm-test fb | modes [--ready FILE] | cursor [--ready FILE]\n");
		return 2;
	}
	if (strcmp(argv[1], "fb") == 0)
		return run_fb();

	fd = open("/dev/dri/card0", O_RDWR | O_CLOEXEC);
	if (fd < 0)
		die_sys("open /dev/dri/card0");
	if (strcmp(argv[1], "modes") == 0)
		rc = run_modes(fd);
	else if (strcmp(argv[1], "cursor") == 0)
		rc = run_cursor(fd);
	else {
		fprintf(stderr, "vgt-drm-test: unknown subcommand '%s'\n", argv[1]);
		return 2;
	}
	if (rc == 0 && ready) {
		int r = open(ready, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
		if (r < 0)
			die_sys("create %s", ready);
		close(r);
		for (;;)
			pause(); /* keep the DRM file, and so the last frame, until a signal ends us */
	}
	close(fd);
	return rc;
}
