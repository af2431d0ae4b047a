package org.apache.beam.sdk.fn.server;

import java.io.IOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.SocketAddress;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.function.Supplier;
import org.apache.beam.model.pipeline.v1.Endpoints.ApiServiceDescriptor;
import org.apache.beam.sdk.fn.channel.SocketAddressFactory;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.BindableService;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.Server;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.ServerInterceptors;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.netty.NettyServerBuilder;

/**
 * Compile-time stand-in for the flink-python jar's {@code ServerFactory}: only the nested
 * {@link InetSocketAddressServerFactory} is packaged (infra/jars.py: loopback_jar); the outer
 * class, {@code UrlFactory} and the epoll variants stay the jar's own.
 *
 * <p>Why: the jar's version announces {@code localhost:PORT} to the Python worker but builds
 * its gRPC servers with {@code NettyServerBuilder.forPort(port)}, which listens on every
 * interface. Each Python-UDF operator opens four of them (control, data, state, logging),
 * reachable from the network and unauthenticated. This one binds the loopback address it
 * announces. Signatures match the original (private constructors are called by the outer
 * class's factory methods, a nestmate), so nothing else changes.
 */
public abstract class ServerFactory {

  public abstract Server allocateAddressAndCreate(
      List<BindableService> services, ApiServiceDescriptor.Builder builder) throws IOException;

  public abstract Server create(List<BindableService> services, ApiServiceDescriptor descriptor)
      throws IOException;

  /** Stand-in for the jar's interface of the same name (same method). */
  public interface UrlFactory {
    String createUrl(String host, int port);
  }

  /** A gRPC server on the loopback address, on the port from {@code portSupplier} (0: any). */
  public static class InetSocketAddressServerFactory extends ServerFactory {
    /** The jar's keep-alive allowance for clients, in seconds. */
    private static final long PERMIT_KEEP_ALIVE_S = 19;

    private final UrlFactory urlFactory;
    private final Supplier<Integer> portSupplier;

    private InetSocketAddressServerFactory(UrlFactory urlFactory) {
      this(urlFactory, () -> 0);
    }

    private InetSocketAddressServerFactory(UrlFactory urlFactory, Supplier<Integer> portSupplier) {
      this.urlFactory = urlFactory;
      this.portSupplier = portSupplier;
    }

    @Override
    public Server allocateAddressAndCreate(
        List<BindableService> services, ApiServiceDescriptor.Builder builder) throws IOException {
      InetSocketAddress address =
          new InetSocketAddress(InetAddress.getLoopbackAddress(), portSupplier.get());
      Server server = listen(services, address);
      builder.setUrl(urlFactory.createUrl(address.getHostName(), server.getPort()));
      return server;
    }

    @Override
    public Server create(List<BindableService> services, ApiServiceDescriptor descriptor)
        throws IOException {
      SocketAddress address = SocketAddressFactory.createFrom(descriptor.getUrl());
      if (!(address instanceof InetSocketAddress)) {
        throw new IllegalArgumentException(
            "ServerFactory needs a host:port address, got " + descriptor.getUrl());
      }
      return listen(services, (InetSocketAddress) address);
    }

    private static Server listen(List<BindableService> services, InetSocketAddress address)
        throws IOException {
      NettyServerBuilder builder =
          NettyServerBuilder.forAddress(address)
              .maxInboundMessageSize(Integer.MAX_VALUE)
              .permitKeepAliveTime(PERMIT_KEEP_ALIVE_S, TimeUnit.SECONDS);
      for (BindableService service : services) {
        builder.addService(
            ServerInterceptors.intercept(service, GrpcContextHeaderAccessorProvider.interceptor()));
      }
      return builder.build().start();
    }
  }
}
