// Requests through HikariCP (Debian's libhikaricp-java) while pgmux replicas restart behind a
// load balancer (tests/it/fleet.rs), every request a short transaction, two pools:
// - "hikaricp": HikariCP's defaults, two connections, two threads pausing 1.5 s between
//   requests. HikariCP checks a connection it hands out (Connection.isValid: an empty statement)
//   only when it rested more than 500 ms, as these do; a draining replica answers the check
//   with 57P01, and HikariCP opens another connection.
// - "hikaricp-checked": four connections, four threads with no pause, and
//   com.zaxxer.hikari.aliveBypassWindowMs = -1, so HikariCP checks every connection it hands out
//   (what the README advises for pools busier than that).
// Runs for SECS seconds, then prints "<pool> ok=N failed=M" per pool and the first errors.
//
// Usage: java -cp HikariCP.jar:postgresql.jar:slf4j-api.jar:slf4j-nop.jar HikariRestart.java URL SECS
import com.zaxxer.hikari.HikariConfig;
import com.zaxxer.hikari.HikariDataSource;
import java.sql.Connection;
import java.sql.ResultSet;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicLong;

public class HikariRestart {
    static final String BYPASS = "com.zaxxer.hikari.aliveBypassWindowMs";

    static class Run {
        final String name;
        final HikariDataSource ds;
        final long pauseMs;
        final AtomicLong ok = new AtomicLong();
        final AtomicLong failed = new AtomicLong();
        final List<String> errors = new ArrayList<>();
        final List<Thread> threads = new ArrayList<>();

        final int size;

        Run(String name, String url, int size, long pauseMs) {
            this.name = name;
            this.pauseMs = pauseMs;
            this.size = size;
            HikariConfig cfg = new HikariConfig();
            cfg.setPoolName(name);
            cfg.setJdbcUrl(url);
            cfg.setUsername("app");
            cfg.setPassword("app_pw");
            cfg.setMaximumPoolSize(size);
            cfg.setMinimumIdle(size);
            cfg.setConnectionTimeout(30000);
            ds = new HikariDataSource(cfg);
        }

        void start(long end) {
            for (int i = 0; i < size; i++) {
                long offset = pauseMs * i / size;
                Thread t = new Thread(() -> {
                    sleep(offset);
                    while (System.nanoTime() < end) {
                        request();
                        sleep(pauseMs);
                    }
                });
                t.start();
                threads.add(t);
            }
        }

        void request() {
            try (Connection c = ds.getConnection()) {
                c.setAutoCommit(false);
                try (Statement s = c.createStatement()) {
                    ResultSet rs = s.executeQuery("SELECT 1 + 1");
                    rs.next();
                    if (rs.getInt(1) != 2) throw new IllegalStateException("bad answer");
                    s.execute("SELECT pg_sleep(0.005)");
                }
                c.commit();
                ok.incrementAndGet();
            } catch (Exception e) {
                failed.incrementAndGet();
                synchronized (errors) {
                    if (errors.size() < 5) errors.add(e.toString().replace('\n', ' '));
                }
            }
        }

        void finish() throws InterruptedException {
            for (Thread t : threads) t.join();
            ds.close();
            System.out.println(name + " ok=" + ok.get() + " failed=" + failed.get());
            for (String e : errors) System.out.println("  " + name + " error: " + e);
        }
    }

    static void sleep(long ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    public static void main(String[] args) throws Exception {
        String url = args[0];
        long end = System.nanoTime() + (long) (Double.parseDouble(args[1]) * 1e9);
        // Read when each pool is made.
        System.clearProperty(BYPASS);
        Run plain = new Run("hikaricp", url, 2, 1500);
        System.setProperty(BYPASS, "-1");
        Run checked = new Run("hikaricp-checked", url, 4, 0);
        plain.start(end);
        checked.start(end);
        plain.finish();
        checked.finish();
    }
}
