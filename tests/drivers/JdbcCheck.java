// JDBC (pgjdbc) through pgmux: server-prepared statements, batches and transactions.
//
// pgjdbc runs a PreparedStatement with the unnamed statement until it has been executed
// prepareThreshold times (default 5), then prepares it as a named statement (S_1, S_2, ...) and
// afterwards sends only Bind/Execute. Three connections are used in turn, statement by
// statement, so behind a pooler in transaction mode with a smaller pool each connection's
// statements run on different servers. Everything runs twice: with the URL as given, and with
// prepareThreshold=1 (named statements from the first execution).
//
// Covered: PreparedStatements run many times past the threshold, several parameter types, an
// error on a named statement then the statement again, addBatch/executeBatch (and a batch that
// fails in the middle), transactions (committed, and rolled back after an error), and a fetch
// size in a transaction (a portal read in pieces).
//
// Usage: java -cp /usr/share/java/postgresql.jar JdbcCheck.java [URL USER PASSWORD]
// (else jdbc:postgresql://PGHOST:PGPORT/PGDATABASE with PGUSER and PGPASSWORD). Prints a
// summary that depends only on the results, so runs against Postgres directly and through
// pgmux print the same; exits non-zero on any error.

import java.math.BigDecimal;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.sql.BatchUpdateException;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;

public class JdbcCheck {
    static final int CONNECTIONS = 3;
    static final int DISTINCT = 10;
    static final int REPEAT = 12;

    static String url;
    static Properties props = new Properties();

    public static void main(String[] args) throws Exception {
        if (args.length == 3) {
            url = args[0];
            props.setProperty("user", args[1]);
            props.setProperty("password", args[2]);
        } else if (args.length == 0) {
            url = "jdbc:postgresql://" + System.getenv("PGHOST") + ":" + System.getenv("PGPORT")
                    + "/" + System.getenv("PGDATABASE");
            props.setProperty("user", System.getenv("PGUSER"));
            props.setProperty("password", System.getenv("PGPASSWORD"));
        } else {
            System.err.println("usage: JdbcCheck.java [URL USER PASSWORD]");
            System.exit(2);
        }
        props.setProperty("connectTimeout", "10");
        props.setProperty("socketTimeout", "60");

        MessageDigest digest = MessageDigest.getInstance("SHA-256");
        String sep = url.contains("?") ? "&" : "?";
        String[] urls = {url, url + sep + "prepareThreshold=1"};
        for (int pass = 0; pass < urls.length; pass++) {
            setup(urls[pass]);
            List<String> out = new ArrayList<>();
            run(urls[pass], out);
            for (String s : out) {
                digest.update((s + "\n").getBytes(StandardCharsets.UTF_8));
            }
            long sum = 0;
            for (int i = 0; i < DISTINCT * REPEAT; i++) {
                sum += Long.parseLong(out.get(i));
            }
            System.out.println("pass " + pass + ": results " + out.size() + ", distinct-text sum "
                    + sum + ", jd_log " + out.get(out.size() - 1));
        }
        StringBuilder hex = new StringBuilder();
        for (byte b : digest.digest()) {
            hex.append(String.format("%02x", b));
        }
        System.out.println("sha256 of all results: " + hex);
    }

    static Connection connect(String u) throws SQLException {
        return DriverManager.getConnection(u, props);
    }

    static void setup(String u) throws SQLException {
        try (Connection c = connect(u); Statement s = c.createStatement()) {
            s.execute("DROP TABLE IF EXISTS jd_items, jd_log");
            s.execute("CREATE TABLE jd_items "
                    + "(id int PRIMARY KEY, grp int NOT NULL, name text NOT NULL)");
            s.execute("INSERT INTO jd_items "
                    + "SELECT g, g % 10, 'item-' || g FROM generate_series(1, 500) g");
            s.execute("CREATE TABLE jd_log "
                    + "(conn int, step int, v bigint, PRIMARY KEY (conn, step))");
        }
    }

    static String one(PreparedStatement ps) throws SQLException {
        try (ResultSet rs = ps.executeQuery()) {
            StringBuilder sb = new StringBuilder();
            while (rs.next()) {
                int n = rs.getMetaData().getColumnCount();
                for (int i = 1; i <= n; i++) {
                    sb.append(i == 1 ? "" : "|").append(rs.getString(i));
                }
                sb.append(";");
            }
            return sb.toString();
        }
    }

    static void run(String u, List<String> out) throws SQLException {
        Connection[] conns = new Connection[CONNECTIONS];
        for (int i = 0; i < CONNECTIONS; i++) {
            conns[i] = connect(u);
        }
        try {
            int n = CONNECTIONS;
            // The same texts prepared on every connection, run past the threshold, connections
            // in turn.
            PreparedStatement[][] ps = new PreparedStatement[n][DISTINCT];
            for (int i = 0; i < n; i++) {
                for (int k = 0; k < DISTINCT; k++) {
                    ps[i][k] = conns[i].prepareStatement("SELECT ?::int + " + k);
                }
            }
            for (int rep = 0; rep < REPEAT; rep++) {
                for (int k = 0; k < DISTINCT; k++) {
                    PreparedStatement p = ps[(rep + k) % n][k];
                    p.setInt(1, rep * 100);
                    try (ResultSet rs = p.executeQuery()) {
                        rs.next();
                        out.add(Long.toString(rs.getLong(1)));
                    }
                }
            }

            // Several parameter types against the table.
            for (int i = 0; i < n; i++) {
                try (PreparedStatement p = conns[i].prepareStatement(
                        "SELECT id, name, ?::numeric * id FROM jd_items "
                                + "WHERE grp = ? AND name LIKE ? AND id < ? ORDER BY id LIMIT 3")) {
                    for (int rep = 0; rep < 8; rep++) {
                        p.setBigDecimal(1, new BigDecimal("1.5"));
                        p.setInt(2, (i + rep) % 10);
                        p.setString(3, "item-%");
                        p.setLong(4, 100L + rep * 10);
                        out.add(one(p));
                    }
                }
            }

            // An error on a (by now named) statement, then the statement again.
            for (int i = 0; i < n; i++) {
                try (PreparedStatement p = conns[i].prepareStatement("SELECT 100 / ?::int")) {
                    int[] divisors = {1, 2, 4, 5, 10, 0, 20, 25};
                    for (int d : divisors) {
                        p.setInt(1, d);
                        try {
                            out.add(one(p));
                        } catch (SQLException e) {
                            if (!"22012".equals(e.getSQLState())) throw e;
                            out.add("error 22012");
                        }
                    }
                }
            }

            // Batches: many Bind/Execute with one Sync.
            for (int i = 0; i < n; i++) {
                try (PreparedStatement p = conns[i].prepareStatement(
                        "INSERT INTO jd_log (conn, step, v) VALUES (?, ?, ?)")) {
                    for (int step = 0; step < 30; step++) {
                        p.setInt(1, i);
                        p.setInt(2, step);
                        p.setLong(3, i * 1000L + step);
                        p.addBatch();
                    }
                    out.add(sumCounts(p.executeBatch()));
                }
                try (PreparedStatement p = conns[(i + 1) % n].prepareStatement(
                        "UPDATE jd_log SET v = v + ? WHERE conn = ? AND step = ?")) {
                    for (int step = 0; step < 30; step += 3) {
                        p.setLong(1, 7);
                        p.setInt(2, i);
                        p.setInt(3, step);
                        p.addBatch();
                    }
                    out.add(sumCounts(p.executeBatch()));
                }
                // A batch failing in the middle (a duplicate key).
                try (PreparedStatement p = conns[(i + 2) % n].prepareStatement(
                        "INSERT INTO jd_log (conn, step, v) VALUES (?, ?, ?)")) {
                    int[] steps = {300, 301, 302, 300, 303, 304};
                    for (int step : steps) {
                        p.setInt(1, i);
                        p.setInt(2, step);
                        p.setLong(3, 1);
                        p.addBatch();
                    }
                    try {
                        p.executeBatch();
                        out.add("no error");
                    } catch (BatchUpdateException e) {
                        if (!"23505".equals(e.getSQLState())) throw e;
                        out.add("batch error 23505");
                    }
                }
                try (PreparedStatement p = conns[i].prepareStatement(
                        "SELECT count(*) FROM jd_log WHERE conn = ? AND step >= 300")) {
                    p.setInt(1, i);
                    out.add(one(p));
                }
            }

            // Transactions: one committed, with a portal read in pieces; one rolled back.
            for (int i = 0; i < n; i++) {
                Connection c = conns[i];
                c.setAutoCommit(false);
                try (PreparedStatement ins = c.prepareStatement(
                        "INSERT INTO jd_log (conn, step, v) VALUES (?, ?, ?)");
                        PreparedStatement sum = c.prepareStatement(
                                "SELECT count(*), sum(v) FROM jd_log WHERE conn = ?")) {
                    for (int step = 100; step < 108; step++) {
                        ins.setInt(1, i);
                        ins.setInt(2, step);
                        ins.setLong(3, step);
                        ins.executeUpdate();
                    }
                    sum.setInt(1, i);
                    out.add(one(sum));
                    try (PreparedStatement big = c.prepareStatement(
                            "SELECT g FROM generate_series(1, ?) g")) {
                        big.setFetchSize(7);
                        big.setInt(1, 50 + i);
                        long total = 0;
                        int rows = 0;
                        try (ResultSet rs = big.executeQuery()) {
                            while (rs.next()) {
                                total += rs.getLong(1);
                                rows++;
                            }
                        }
                        out.add(rows + "/" + total);
                    }
                    c.commit();

                    ins.setInt(1, i);
                    ins.setInt(2, 200);
                    ins.setLong(3, 1);
                    ins.executeUpdate();
                    try {
                        ins.executeUpdate();
                        out.add("no error");
                    } catch (SQLException e) {
                        if (!"23505".equals(e.getSQLState())) throw e;
                        out.add("error 23505");
                    }
                    c.rollback();
                    out.add(one(sum));
                    c.commit();
                } finally {
                    c.setAutoCommit(true);
                }
            }

            try (Statement s = conns[0].createStatement();
                    ResultSet rs = s.executeQuery("SELECT count(*), sum(v) FROM jd_log")) {
                rs.next();
                out.add(rs.getLong(1) + "/" + rs.getLong(2));
            }
        } finally {
            for (Connection c : conns) {
                c.close();
            }
        }
    }

    static String sumCounts(int[] counts) {
        long total = 0;
        for (int x : counts) {
            total += x == Statement.SUCCESS_NO_INFO ? 1000 : x;
        }
        return counts.length + " statements, " + total + " rows";
    }
}
