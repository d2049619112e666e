/* Line-oriented logging to stderr: "TIME LEVEL name: message". */
#ifndef DS_UTIL_LOG_H
#define DS_UTIL_LOG_H

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Sets the instance name printed on every line and the lowest level shown.
 * Call once at start-up, before any thread logs. */
void log_setup(const char *instance, enum log_level min);

void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

#endif
