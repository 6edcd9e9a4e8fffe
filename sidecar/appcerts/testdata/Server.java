// A TLS server written against the JDK only, to prove that the stores podtls
// writes work in a real JVM: it loads the keystore and truststore with the
// password from a file, requires a client certificate that chains to the
// truststore, and answers with the client's URI SAN (its SPIFFE ID).
// Usage: java Server.java KEYSTORE TRUSTSTORE TYPE PASSWORD-FILE
// It prints the port it listens on (127.0.0.1, chosen by the kernel).
import com.sun.net.httpserver.HttpsConfigurator;
import com.sun.net.httpserver.HttpsExchange;
import com.sun.net.httpserver.HttpsParameters;
import com.sun.net.httpserver.HttpsServer;
import java.io.FileInputStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.KeyStore;
import java.security.cert.X509Certificate;
import java.util.List;
import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLParameters;
import javax.net.ssl.TrustManagerFactory;

public class Server {
  public static void main(String[] args) throws Exception {
    char[] password = Files.readString(Path.of(args[3])).trim().toCharArray();
    KeyStore keys = KeyStore.getInstance(args[2]);
    try (FileInputStream in = new FileInputStream(args[0])) { keys.load(in, password); }
    KeyStore trust = KeyStore.getInstance(args[2]);
    try (FileInputStream in = new FileInputStream(args[1])) { trust.load(in, password); }
    KeyManagerFactory kmf = KeyManagerFactory.getInstance("PKIX");
    kmf.init(keys, password);
    TrustManagerFactory tmf = TrustManagerFactory.getInstance("PKIX");
    tmf.init(trust);
    SSLContext ctx = SSLContext.getInstance("TLS");
    ctx.init(kmf.getKeyManagers(), tmf.getTrustManagers(), null);

    HttpsServer server = HttpsServer.create(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0), 0);
    server.setHttpsConfigurator(new HttpsConfigurator(ctx) {
      @Override
      public void configure(HttpsParameters p) {
        SSLParameters sp = ctx.getDefaultSSLParameters();
        sp.setNeedClientAuth(true);
        p.setSSLParameters(sp);
      }
    });
    server.createContext("/", ex -> {
      String peer = "";
      try {
        X509Certificate c = (X509Certificate) ((HttpsExchange) ex).getSSLSession().getPeerCertificates()[0];
        for (List<?> san : c.getSubjectAlternativeNames()) {
          if ((Integer) san.get(0) == 6) peer = (String) san.get(1);
        }
      } catch (Exception e) {
        peer = "error: " + e;
      }
      byte[] body = ("hello from java to " + peer + " via " + ((HttpsExchange) ex).getSSLSession().getProtocol() + "\n").getBytes(StandardCharsets.UTF_8);
      ex.sendResponseHeaders(200, body.length);
      ex.getResponseBody().write(body);
      ex.close();
    });
    server.start();
    System.out.println(server.getAddress().getPort());
    System.out.flush();
  }
}
